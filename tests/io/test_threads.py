"""thread_budget: decoding threads per reader from the DataLoader workers and the cores."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Dataset

from tubelet.io import thread_budget
from tubelet.io.threads import available_cores


@pytest.mark.parametrize(
    ("num_workers", "cores", "expected"),
    [(0, 8, 8), (1, 8, 8), (2, 8, 4), (3, 8, 2), (8, 8, 1), (16, 8, 1), (4, 1, 1)],
)
def test_budget_shares_the_cores_between_workers(num_workers, cores, expected):
    assert thread_budget(num_workers, cores=cores) == expected


def test_default_cores_are_the_affinity_mask():
    assert thread_budget(0) == available_cores() >= 1


class _Budgets(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return thread_budget(cores=12)


def test_inside_a_worker_the_budget_counts_the_workers():
    assert thread_budget(cores=12) == 12  # main process, no workers
    loader = DataLoader(_Budgets(), batch_size=None, num_workers=2, timeout=60)
    assert [int(b) for b in loader] == [6, 6]


@pytest.mark.parametrize(("num_workers", "cores"), [(-1, 4), (True, 4), (2, 0), (2, 1.5)])
def test_bad_arguments_raise(num_workers, cores):
    with pytest.raises(ValueError, match="num_workers|cores"):
        thread_budget(num_workers, cores=cores)

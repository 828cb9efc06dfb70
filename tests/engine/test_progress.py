import io

from rich.console import Console

from tubelet.engine.progress import TrainProgress, data_bound_warning


def test_data_bound_warning_after_the_first_batches_only():
    assert data_bound_warning(0.9, batches=1) is None  # workers are still starting
    assert data_bound_warning(0.5, batches=50) is None
    warning = data_bound_warning(0.63, batches=50)
    assert warning.startswith("data-bound: 63% of the time waiting for data")
    assert "--workers" in warning


def _bar_text(wait_share):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with TrainProgress(console=console) as progress:
        task = progress.start_epoch(1, 1, 10)
        for _ in range(5):
            progress.update(task, loss=1.0, clips_per_s=2.0, wait_share=wait_share)
        progress.log_epoch({"epoch": 1, "train_loss": 1.0, "data_wait_share": wait_share})
    return out.getvalue()


def test_the_bar_and_the_epoch_line_flag_a_data_bound_run():
    slow = _bar_text(0.8)
    assert "data wait 80% (data-bound)" in slow
    assert "warning: data-bound: 80% of the time waiting for data" in slow
    fast = _bar_text(0.1)
    assert "data wait 10%" in fast and "data-bound" not in fast

import io

from rich.console import Console
from rich.progress import Progress

from agentcycle._progress import LineProgress, phase_progress


def test_a_log_gets_a_line_per_phase_and_its_quarters_a_terminal_gets_bars():
    log = Console(file=io.StringIO(), force_terminal=False)
    with phase_progress(log) as progress:
        assert isinstance(progress, LineProgress)
        ingest = progress.add_task("ingest", total=None)
        progress.update(ingest, completed=1, total=1)
        train = progress.add_task("train", total=None)
        for step in range(1, 21):
            progress.update(train, completed=step, total=20,
                            description=f"train, loss {1 / step:.2f}")
    lines = log.file.getvalue().splitlines()
    assert lines[0] == "- ingest ..." and lines[1].startswith("  ingest: done, 1/1 in ")
    assert lines[2] == "- train ..."
    assert [line.split(":")[1].split("(")[0].strip() for line in lines[3:6]] == ["5/20", "10/20",
                                                                              "15/20"]
    assert lines[6].startswith("  train, loss 0.05: done, 20/20 in ") and len(lines) == 7
    assert isinstance(phase_progress(Console(file=io.StringIO(), force_terminal=True)), Progress)

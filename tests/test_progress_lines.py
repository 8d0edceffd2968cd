"""Progress of long CLI work when stderr is not a terminal (a log, nohup, CI): plain lines, at most every N s."""
import io

from lorank.progress import ProgressLines


def test_progress_lines_throttled_with_rate_and_time_left():
    t = [0.0]
    out = io.StringIO()
    ticks = []
    p = ProgressLines("rerank", 600, tick=ticks.append, every_s=30.0, out=out, clock=lambda: t[0])
    for _ in range(10):  # 10 x 10 pairs in 10 s: no line yet
        t[0] += 1.0
        p(10)
    assert out.getvalue() == "" and sum(ticks) == 100
    t[0] = 30.0
    p(50)  # 150 pairs in 30 s: 5/s, 450 left = 1.5 min
    lines = out.getvalue().splitlines()
    assert lines == ["rerank: 150/600 (5.00/s, 0.5 min, ~2 min left)"]
    t[0] = 45.0
    p(10)
    assert len(out.getvalue().splitlines()) == 1  # throttled: 15 s since the last line
    t[0] = 61.0
    p(10)
    assert out.getvalue().splitlines()[-1].startswith("rerank: 170/600 (")


def test_progress_lines_without_total():
    t = [0.0]
    out = io.StringIO()
    p = ProgressLines("encode", None, every_s=1.0, out=out, clock=lambda: t[0])
    t[0] = 2.0
    p(4)
    assert out.getvalue().strip() == "encode: 4 (2.00/s, 0.0 min)"


def test_work_done_before_a_resume_counts_as_done_but_not_in_the_rate():
    """A resumed ablation sweep reported 1251/2700 at 8.67/s, ~3 min left, when it went at ~1/s."""
    t = [0.0]
    out = io.StringIO()
    ticks = []
    p = ProgressLines("ablate", 2700, tick=ticks.append, every_s=30.0, out=out, clock=lambda: t[0])
    p.resumed(1186)
    t[0] = 60.0
    p(60)  # 60 sequences in 60 s: 1/s, 1454 left
    assert out.getvalue().splitlines() == ["ablate: resumed at 1186/2700",
                                           "ablate: 1246/2700 (1.00/s, 1.0 min, ~24 min left)"]
    assert sum(ticks) == 1246

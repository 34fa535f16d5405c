"""lavida writes its text files as UTF-8 and reads them back as UTF-8 whatever the locale: under a C or a
Windows code-page locale, report.md's title ("# shanghaitech — standard protocol") read with the locale's
encoding either failed to decode or lost its dash, and lavida-tables could not place the run."""

import json
import os
import subprocess
import sys


def test_lavida_tables_reads_a_report_title_under_a_c_locale(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"frame_auc_micro": 0.5}), encoding="utf-8")
    (run / "report.md").write_text("# shanghaitech — standard protocol\n", encoding="utf-8")
    code = (
        f"from lavida.eval.tables import read_run; r = read_run({str(run)!r}); print(r.benchmark, r.protocol)"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    result = subprocess.run(
        [sys.executable, "-X", "utf8=0", "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["shanghaitech", "standard"]

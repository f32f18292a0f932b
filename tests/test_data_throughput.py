"""benchmarks/data_throughput.py and benchmarks/prepare_scale.py at tiny sizes: every row has its fields and a
positive rate, the markdown table reads the rows back, and bad input is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import data_throughput
    import prepare_scale

    return data_throughput, prepare_scale


def test_loader_rows_and_table(bench, tmp_path, capsys):
    data_throughput, _ = bench
    data_throughput.main(["--n", "40", "--resolutions", "32", "--workers", "0,1", "--batch-size", "4",
                          "--min-seconds", "0", "--presets", "none", "--data-dir", str(tmp_path)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["source"], r["workers"]) for r in rows} == {("folder", 0), ("folder", 1), ("packed", 0), ("packed", 1)}
    for r in rows:
        assert r["bench"] == "data_throughput" and r["kind"] == "loader" and r["resolution"] == 32
        assert r["images_per_s"] > 0 and r["per_worker_images_per_s"] > 0 and r["images"] >= 4 * 7 and r["epochs"] == 1
        assert r["machine"] and r["cpu_kind"] and r["jpeg_mean_kb"] > 10 and r["gpu"] == []
    assert (tmp_path / "jpeg" / ".synthetic.json").is_file() and (tmp_path / "packed32" / "manifest.json").is_file()
    # The README table, with a demand row of this CPU and a resolution that has published GPU runs.
    packed = next(r for r in rows if r["source"] == "packed" and r["workers"] == 1)
    rows += [{**r, "resolution": 128} for r in rows]
    rows.append({"kind": "train_demand", "preset": "biggan-128", "resolution": 128, "images_per_s": 2.0})
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json: a log line\n")
    data_throughput.main(["--table", str(jsonl)])
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if x.startswith("| 128 | packed |"))
    cores = 150_000 * 2048 / (15 * 86_400) / packed["per_worker_images_per_s"]  # BigGAN-PyTorch on 8 x V100
    assert f"BigGAN, 8 x V100: 237 ({data_throughput.cores(cores)})" in line
    assert f"biggan-128: 2.0 ({2.0 / packed['per_worker_images_per_s']:.2f})" in line
    assert data_throughput.cores(0.0412) == "0.04" and data_throughput.cores(12.34) == "12"
    assert "| 32 | folder |" in table and "none published" in table


def test_bad_input_is_one_line(bench, tmp_path, capsys):
    data_throughput, prepare_scale = bench
    with pytest.raises(SystemExit) as stop:
        data_throughput.main(["--presets", "128:biggan-128", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == ("data_throughput: error: --presets item '128:biggan-128' is not "
                                              "RESOLUTION=PRESET (e.g. 128=biggan-128)")
    with pytest.raises(SystemExit) as stop:  # one batch per epoch cannot time a worker
        data_throughput.main(["--n", "10", "--resolutions", "32", "--workers", "1", "--batch-size", "8",
                              "--presets", "none", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2 and "raise --n or lower --batch-size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        prepare_scale.main(["--n", "10", "--data-dir", str(tmp_path), "--free-factor", "1e12"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("prepare_scale: error: ") and "\n" not in err and "free" in err


def test_prepare_scale_rows(bench, tmp_path, capsys):
    _, prepare_scale = bench
    prepare_scale.main(["--n", "30", "--resolution", "32", "--source-size", "48", "--workers", "1",
                        "--data-dir", str(tmp_path)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["step"] for r in rows] == ["generate", "prepare"]
    assert rows[0]["images"] == 30 and rows[0]["mean_kb"] > 0 and rows[0]["disk"]["packed_mb"] > 0
    r = rows[1]
    assert r["workers"] == 1 and r["images"] == 30 and r["images_per_s"] > 0 and r["seconds"] > 0
    assert r["peak_rss_mb"] > 10 and r["open_ms"] > 0 and r["first_read_ms"] > 0 and r["machine"]
    assert not list(tmp_path.glob("packed*"))  # removed after each run unless --keep

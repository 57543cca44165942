"""The results records (`pcnn.workflow.results`): the committed results validate, records round-trip,
a missing field fails clearly, and the report reads no key that the schema does not declare."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pcnn.workflow import results as schema
from pcnn.workflow.pipeline import Paths, read_record, read_result, write_result

REPO = Path(__file__).resolve().parents[1]
COMMITTED = json.loads((REPO / "figures" / "results.json").read_text())


def _paths(tmp_path: Path) -> Paths:
    return Paths(build=tmp_path, runs=tmp_path, results=tmp_path / "results", figures=tmp_path).mkdirs()


@pytest.mark.parametrize("name", list(schema.RECORDS))
def test_the_committed_results_validate_unchanged(name: str) -> None:
    assert schema.validate_record(name, COMMITTED[name]) == COMMITTED[name]


def test_old_results_still_read() -> None:
    """The ablation rows committed before the schema (figures/ablation.json) are valid rows."""
    old = json.loads((REPO / "figures" / "ablation.json").read_text())
    assert schema.validate_record("ablation", old) == old


@pytest.mark.parametrize("name", ["data", "training", "finetune", "sampling"])
def test_round_trip_through_the_dataclass_and_the_file(tmp_path: Path, name: str) -> None:
    record = schema.RECORDS[name].from_dict(COMMITTED[name])
    assert record.to_dict() == COMMITTED[name]
    paths = _paths(tmp_path)
    write_result(paths, name, record)
    assert read_result(paths, name) == COMMITTED[name]
    assert read_record(paths, schema.RECORDS[name]) == record


def test_training_record_attributes() -> None:
    training = schema.TrainingRecord.from_dict(COMMITTED["training"])
    assert training.validation is not None and training.validation["n"] == 519
    # the committed build's record names the profile its manifest was built with
    profile = json.loads((REPO / "figures" / "manifest.json").read_text())["meta"]["profile"]
    assert training.config["name"] == profile and "loss_curve" not in training.extra


def test_a_missing_field_fails_naming_the_field_and_the_notebook(tmp_path: Path) -> None:
    broken = {k: v for k, v in COMMITTED["finetune"].items() if k != "finetuned"}
    with pytest.raises(schema.ResultError, match=r"'finetuned'.*report needs.*02_finetuning"):
        schema.validate_record("finetune", broken)
    with pytest.raises(schema.ResultError, match="'finetuned'"):
        write_result(_paths(tmp_path), "finetune", broken)
    rows = copy.deepcopy(COMMITTED["ablation"])
    del rows[1]["budget"]
    with pytest.raises(schema.ResultError, match=r"'budget'.*03_ablations"):
        schema.validate_record("ablation", rows)


def test_a_record_is_written_under_its_own_name(tmp_path: Path) -> None:
    record = schema.DataRecord.from_dict(COMMITTED["data"])
    with pytest.raises(ValueError, match="'data' record, not 'training'"):
        write_result(_paths(tmp_path), "training", record)


def test_a_wrong_type_fails() -> None:
    with pytest.raises(schema.ResultError, match="'speed' should be list"):
        schema.validate_record("sampling", {**COMMITTED["sampling"], "speed": {"batch": 1}})


def test_the_report_merges_validated_records(tmp_path: Path) -> None:
    from pcnn.reporting.report import merge_results

    paths = _paths(tmp_path)
    for name in schema.RECORDS:
        write_result(paths, name, COMMITTED[name])
    merged = merge_results(paths.results, COMMITTED["meta"])
    assert {k: merged[k] for k in schema.RECORDS} == {k: COMMITTED[k] for k in schema.RECORDS}
    (paths.results / "training.json").write_text(json.dumps({"checkpoint": "x"}))
    with pytest.raises(schema.ResultError, match="01_training"):
        merge_results(paths.results)


# ------------------------------------------------------------------ every key the report reads is declared


class _Recorder(Mapping):
    """A read-only view of a record that notes every key path read through it."""

    def __init__(self, data: Mapping[str, Any], path: str, seen: set[str]) -> None:
        self._data, self._path, self._seen = data, path, seen

    def _wrap(self, key: Any, value: Any) -> Any:
        path = f"{self._path}.{key}" if self._path else str(key)
        self._seen.add(path)
        return _wrap(value, path, self._seen)

    def __getitem__(self, key: Any) -> Any:
        return self._wrap(key, self._data[key])

    def __iter__(self) -> Iterator[Any]:
        for key in self._data:
            self._seen.add(f"{self._path}.{key}" if self._path else str(key))
            yield key

    def __len__(self) -> int:
        return len(self._data)


class _RecordedList(list):
    def __init__(self, items: list[Any], path: str, seen: set[str]) -> None:
        super().__init__(_wrap(item, f"{path}.*", seen) for item in items)


def _wrap(value: Any, path: str, seen: set[str]) -> Any:
    if isinstance(value, Mapping):
        return _Recorder(value, path, seen)
    if isinstance(value, list) and value and isinstance(value[0], (Mapping, list)):
        return _RecordedList(value, path, seen)
    return value


def _declared(path: str) -> bool:
    name, _, rest = path.partition(".")
    if not rest or name not in schema.RECORDS:
        return True  # a whole record, or `meta`
    return schema.declares(name, rest)


def test_declared_paths() -> None:
    assert schema.declares("training", "validation.per_class_accuracy.panda")
    assert schema.declares("ablation", "*.val_accuracy") and schema.declares("sampling", "fid.matched")
    assert not schema.declares("training", "validation.no_such_key")
    assert schema.declares("sampling", "temperature.candidates.0.95.fid")
    assert schema.declares("sampling", "temperature.candidates.1.fid")
    assert not schema.declares("sampling", "temperature.candidates.0.95.fid.more")


def test_every_key_path_the_report_reads_is_declared(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from pcnn.reporting import report

    seen: set[str] = set()
    recorded = _Recorder(COMMITTED, "", seen)
    report.macros_tex(recorded)
    report.write_tables(recorded, tmp_path)
    for maker in report.FIGURE_MAKERS.values():
        try:
            plt.close(maker(recorded, tmp_path))
        except FileNotFoundError:
            pass  # a figure drawn from images (`results/<name>.npz`), not from the records
    nested = {path for path in seen if path.count(".") >= 1 and not path.startswith("meta")}
    assert nested, "the recorder saw the report's reads"
    undeclared = sorted(path for path in nested if not _declared(path))
    assert not undeclared, f"the report reads keys that pcnn.workflow.results does not declare: {undeclared}"

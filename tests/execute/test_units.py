"""The executor seam without Ray: units, the local executor, the worker's rules, and the run settings."""

from __future__ import annotations

import hashlib
import json
from statistics import fmean  # a module-level function that takes keywords: units call fn(**kwargs)

import pytest

import ppl_audit
from ppl_audit.audits import audit_file_run_settings, load_audit_file
from ppl_audit.audits.fanout import ModelNames, check_travels
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.execute import (Executor, LocalExecutor, Unit, current_executor, make_executor, use_executor,
                               worker_model)
from ppl_audit.execute.worker import run_unit
from ppl_audit.training import before_training, load_model


def test_a_unit_travels_by_name_only():
    Unit("ok", fmean, {"data": [1, 2]})
    with pytest.raises(InvalidInputError, match="module-level function"):
        Unit("lambda", lambda: 1)
    with pytest.raises(InvalidInputError, match="non-empty name"):
        Unit("", fmean)


def test_the_local_executor_keeps_the_units_order_and_passes_live_objects():
    units = [Unit(str(i), fmean, {"data": [0, i]}, local={"weights": [1, 3]}) for i in range(5)]
    assert LocalExecutor().map(units) == [0.0, 0.75, 1.5, 2.25, 3.0]
    with pytest.raises(InvalidInputError, match="two units are named '1'"):
        LocalExecutor().map([Unit("1", fmean, {"data": [1]})] * 2)


def test_make_executor_refuses_unknown_kinds_and_an_address_without_ray():
    assert make_executor("local").kind == "local" and make_executor().provenance() == {"kind": "local"}
    with pytest.raises(InvalidInputError, match="executor 'dask' is unknown; known: local, ray"):
        make_executor("dask")
    with pytest.raises(InvalidInputError, match="needs the ray executor"):
        make_executor("local", "127.0.0.1:6379")


def test_without_ray_the_ray_executor_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(InvalidInputError, match=r"needs Ray, which is not installed: pip install -e \.\[ray\]"):
        make_executor("ray")


def test_an_unreachable_address_fails_at_once_naming_it():
    pytest.importorskip("ray")
    with pytest.raises(InvalidInputError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        make_executor("ray", "127.0.0.1:1")  # nothing listens on port 1: refused, no retries
    with pytest.raises(InvalidInputError, match="is not HOST:PORT"):
        make_executor("ray", "nowhere")


@pytest.fixture
def fake_ray_init(monkeypatch):
    """``connect``'s calls to ``ray.init`` recorded, none made; ``found`` sets the cluster Ray would find."""
    ray = pytest.importorskip("ray")
    import ray._private.services as services

    calls, found = [], {"address": None}

    def find(addr, temp_dir):
        if found["address"] is None:
            raise ConnectionError("Could not find any running Ray instance.")
        return found["address"]

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs["address"]))
    monkeypatch.setattr(services, "get_ray_address_from_environment", find)
    return calls, found


def test_auto_starts_a_local_instance_where_ray_recorded_a_cluster_that_has_gone(fake_ray_init):
    """Ray's record of the last head outlives it, and ray.init('auto') then retried for minutes."""
    from ppl_audit.execute.ray_executor import connect

    calls, found = fake_ray_init
    found["address"] = "127.0.0.1:1"  # recorded, but nothing listens: refused at once
    assert connect("auto") is True and calls == ["local"]
    found["address"] = None  # no cluster at all
    assert connect("auto") is True and calls == ["local", "local"]


def test_auto_joins_a_recorded_cluster_that_answers(fake_ray_init):
    import socket

    from ppl_audit.execute.ray_executor import connect

    calls, found = fake_ray_init
    with socket.create_server(("127.0.0.1", 0)) as listening:
        found["address"] = f"127.0.0.1:{listening.getsockname()[1]}"
        assert connect("auto") is False and calls == [found["address"]]


def test_auto_refuses_an_unreachable_ray_address_from_the_environment(fake_ray_init, monkeypatch):
    from ppl_audit.execute.ray_executor import connect

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(InvalidInputError, match=r"cannot reach the Ray cluster at 127.0.0.1:1 \(RAY_ADDRESS\)"):
        connect("auto")
    assert fake_ray_init[0] == []


def test_current_executor_is_local_unless_a_block_sets_one():
    assert current_executor().kind == "local"

    class Remote(LocalExecutor):
        kind, remote = "remote-test", True

    with use_executor(Remote()) as executor:
        assert current_executor() is executor
    assert current_executor().kind == "local"


def test_a_worker_returns_errors_as_text_and_refuses_a_different_version():
    assert run_unit(fmean, {"data": [1, 2]}, ppl_audit.__version__).value == 1.5
    failed = run_unit(fmean, {"data": []}, ppl_audit.__version__)
    assert failed.error == "StatisticsError: fmean requires at least one data point" and failed.pid > 0 and failed.host
    other = run_unit(fmean, {"data": [1]}, "0.0.0-driver")
    assert other.error.startswith(f"this worker has ppl-audit {ppl_audit.__version__}, the driver 0.0.0-driver")


def test_a_worker_never_trains_and_names_the_model_and_the_cache(tmp_path, tiny_card):
    outcome = run_unit(load_model, {"card_or_name": tiny_card, "cache": str(tmp_path), "device": "cpu"},
                       ppl_audit.__version__)
    assert outcome.error.startswith("WeightsError: model 'house-rocket-cnn' is not in the cache")
    assert str(tmp_path) in outcome.error and "shared path" in outcome.error
    with before_training(None):  # the refusal lives in the worker only: the driver may still train
        assert not list(tmp_path.iterdir())


def test_a_worker_loads_a_model_once():
    loads = []
    for _ in range(3):
        worker_model(("test", "once"), lambda: loads.append(1) or "model")
    assert loads == [1]


def test_model_names_travel_as_absolute_paths_and_the_resolved_cache(tmp_path, monkeypatch):
    (tmp_path / "clf.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PPL_AUDIT_CACHE", str(tmp_path / "cache"))
    names = ModelNames.of("clf.onnx", "house-rocket", cache=None, data_dir=None, device="cpu",
                          classifier_options={"class_names": ["a", "b"], "weights": None})
    assert names.classifier == str(tmp_path / "clf.onnx") and names.world == "house-rocket"
    assert names.cache == str(tmp_path / "cache") and dict(names.classifier_options)["class_names"] == ("a", "b")


def test_a_remote_executor_refuses_models_given_as_objects_and_registered_worlds():
    from ppl_audit.audits import worlds as registry
    from ppl_audit.priors import make_world

    class Remote(LocalExecutor):
        kind, remote = "ray", True

    check_travels(LocalExecutor(), given=["classifier"])  # in process, objects are fine
    with pytest.raises(InvalidInputError, match="a classifier given as a Python object cannot travel"):
        check_travels(Remote(), given=["classifier"])
    registry.register_world("only-here", lambda device: make_world("house-rocket", device=device), replace=True)
    with pytest.raises(InvalidInputError, match="world 'only-here' was registered in this process"):
        check_travels(Remote(), worlds=["house-rocket", "only-here"])


def test_the_audit_file_says_where_to_run_outside_its_spec(tmp_path):
    text = '[audit]\nkind = "levelset"\nworlds = ["house-rocket"]\nnum_particles = 64\nnum_samples = 64\n'
    plain, ray = tmp_path / "plain.toml", tmp_path / "ray.toml"
    plain.write_text(text)
    ray.write_text(text + 'executor = "ray"\nray_address = "10.0.0.5:6379"\n')
    _, spec_plain, _ = load_audit_file(plain)
    _, spec_ray, _ = load_audit_file(ray)
    assert spec_plain == spec_ray  # same spec, same hash: where it ran is provenance only
    settings = audit_file_run_settings(ray)
    assert (settings.executor, settings.ray_address) == ("ray", "10.0.0.5:6379")
    assert audit_file_run_settings(plain).executor is None
    ray.write_text(text + "executor = 3\n")
    with pytest.raises(AuditFileError, match="executor must be a string, got 3"):
        load_audit_file(ray)


def test_executor_is_abstract():
    with pytest.raises(TypeError):
        Executor()


def test_reports_record_the_executor_under_provenance_only(tmp_path, tiny_card_file):
    from ppl_audit.audits import run_audit
    from ppl_audit.audits.levelset import LevelSetAuditSpec, TargetSpec

    spec = LevelSetAuditSpec(classifier=str(tiny_card_file), worlds=("house-rocket",),
                             targets=(TargetSpec("ambiguous", (0.5, 0.5), 10.0),), num_particles=32, num_steps=8,
                             num_samples=16, num_prior_samples=20, device="cpu")
    report = run_audit(spec, seed=0, out=tmp_path / "OUT")
    data = json.loads((tmp_path / "OUT" / "report.json").read_text())
    assert data["provenance"]["executor"] == {"kind": "local"} == report.provenance["executor"]
    assert "executor" not in data["provenance"]["spec"]
    assert data["provenance"]["spec_sha256"] == hashlib.sha256(json.dumps(
        data["provenance"]["spec"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()

"""``python -m bench.assoc``: the associative-retrieval generator, the models, a tiny run, argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th

from bench.assoc import (
    N_DIGITS,
    N_LETTERS,
    QUERY_MARK,
    RetrievalClassifier,
    TrainConfig,
    build_core,
    decode,
    generate,
    main,
    models,
    train,
)
from fw_agents.registry import get_memory

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("num_pairs", [1, 4, 8, 26])
def test_generated_sequences_are_valid(num_pairs: int) -> None:
    tokens, targets = generate(500, num_pairs, np.random.default_rng(1))
    assert tokens.shape == (500, 2 * num_pairs + 3) and targets.shape == (500,)
    for row, target in zip(tokens.tolist(), targets.tolist(), strict=True):
        keys, values = row[0 : 2 * num_pairs : 2], row[1 : 2 * num_pairs : 2]
        assert all(0 <= k < N_LETTERS for k in keys) and len(set(keys)) == num_pairs
        assert all(N_LETTERS <= v < N_LETTERS + N_DIGITS for v in values)
        assert row[2 * num_pairs : 2 * num_pairs + 2] == [QUERY_MARK, QUERY_MARK]
        query = row[-1]
        assert query in keys
        assert target == values[keys.index(query)] - N_LETTERS


def test_generator_covers_the_choices_and_is_seeded() -> None:
    tokens, targets = generate(4000, 4, np.random.default_rng(0))
    assert set(targets.tolist()) == set(range(N_DIGITS))
    # The query is each of the 4 positions about equally often.
    position = (tokens[:, 0:8:2] == tokens[:, -1:]).float().argmax(dim=1)
    assert th.bincount(position, minlength=4).min() > 800
    again, _ = generate(4000, 4, np.random.default_rng(0))
    assert th.equal(tokens, again)


def test_decode_matches_the_papers_example() -> None:
    # c9k8j3f1??c -> 9
    ids = [2, N_LETTERS + 9, 10, N_LETTERS + 8, 9, N_LETTERS + 3, 5, N_LETTERS + 1, QUERY_MARK, QUERY_MARK, 2]
    assert decode(ids) == "c9k8j3f1??c"
    tokens, _ = generate(3, 4, np.random.default_rng(0))
    assert all(len(decode(t)) == 11 and decode(t)[8:10] == "??" for t in tokens)


@pytest.mark.parametrize("model", models())
def test_classifier_shapes_and_gradients(model: str) -> None:
    net = RetrievalClassifier(build_core(model, 8), head_size=16)
    tokens, _ = generate(5, 3, np.random.default_rng(0))
    logits = net(tokens)
    assert logits.shape == (5, N_DIGITS)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_irnn_is_an_identity_initialised_relu_rnn() -> None:
    core = build_core("irnn", 6)
    th.manual_seed(0)
    x = th.randn(4, 2, core.input_size)
    out, _ = core(x, core.initial_state(2), th.zeros(4, 2))
    assert th.equal(core.hidden_to_hidden.weight, th.eye(6))
    h = th.zeros(2, 6)
    for t in range(4):  # h(t+1) = relu(W h(t) + C x(t) + b)
        h = th.relu(core.hidden_to_hidden(h) + core.input_to_hidden(x[t]))
        th.testing.assert_close(out[t], h)


def test_sequences_start_from_zero_state() -> None:
    """A sequence's logits do not depend on what else is in the batch."""
    net = RetrievalClassifier(build_core("fast-weights", 8))
    tokens, _ = generate(6, 4, np.random.default_rng(0))
    th.testing.assert_close(net(tokens)[2:3], net(tokens[2:3]))


def test_tiny_training_run_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["--train-size", "256", "--val-size", "64", "--test-size", "64", "--epochs", "1", "--hidden-size", "8"]
    assert main([*argv, "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["model"] == "fast-weights" and result["epochs_run"] == 1
    assert 0.0 <= result["test_error"] <= 1.0 and len(result["history"]) == 1
    assert "test error" in capsys.readouterr().out


def test_core_kwargs_build_the_policies_cell(tmp_path: Path) -> None:
    """``--core-kwargs`` with ``--fast-learning-rate balanced``: the cell the fast-weights policies build by default,
    recorded in the JSON."""
    policy_cell = dict(get_memory("fast-weights").policies["Mlp"].default_memory_kwargs)
    cell = {name: value for name, value in policy_cell.items() if name != "fast_learning_rate"}
    th.manual_seed(0)
    core = build_core("fast-weights", 8, fast_learning_rate=policy_cell["fast_learning_rate"], core_kwargs=cell)
    th.manual_seed(0)
    policies_core = type(core)(37, 8, **policy_cell)
    assert (
        core.state_dict().keys()
        == policies_core.state_dict().keys()
        != build_core("fast-weights", 8).state_dict().keys()
    )
    for name, value in core.state_dict().items():
        th.testing.assert_close(value, policies_core.state_dict()[name])
    out = tmp_path / "r.json"
    flags = [f"{name}={str(value).lower()}" for name, value in cell.items()]
    argv = ["--train-size", "64", "--val-size", "32", "--test-size", "32", "--epochs", "1", "--hidden-size", "8"]
    argv += ["--fast-learning-rate", "balanced", "--core-kwargs", *flags, "--json", str(out), "--quiet"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["core_kwargs"] == cell and result["config"]["fast_learning_rate"] == "balanced"
    # The learned λ and η after each epoch: trained, so moved off where they start (λ 0.95, η 2(1 − λ)/H).
    (row,) = result["history"]
    assert 0.0 < row["decay_rate"] < 1.0 and row["fast_learning_rate"] > 0.0
    assert (row["decay_rate"], row["fast_learning_rate"]) != pytest.approx((0.95, 2 * 0.05 / 8), rel=1e-6)
    # The fast term's starting size is recorded: at these defaults it is a small fraction of the slow one.
    assert 0.0 < result["initial_fast_slow_ratio"] < 0.1


def test_initial_fast_slow_ratio_scales_with_eta_and_not_with_a_normalised_read(tmp_path: Path) -> None:
    argv = ["--train-size", "64", "--val-size", "32", "--test-size", "32", "--epochs", "1", "--hidden-size", "8"]
    ratios = {}
    for eta in ("0.05", "0.5"):
        for extra in ([], ["--core-kwargs", "fast_read_gain=1.0"]):
            out = tmp_path / f"r{eta}{len(extra)}.json"
            assert main([*argv, "--fast-learning-rate", eta, *extra, "--json", str(out), "--quiet"]) == 0
            ratios[eta, bool(extra)] = json.loads(out.read_text())["initial_fast_slow_ratio"]
    assert ratios["0.5", False] > 5 * ratios["0.05", False] > 0.0
    assert ratios["0.5", True] == pytest.approx(ratios["0.05", True], rel=1e-4)
    out = tmp_path / "gru.json"
    assert main([*argv, "--model", "gru", "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["initial_fast_slow_ratio"] is None


def test_fast_weights_learn_a_single_pair_quickly() -> None:
    """K = 1 needs only the value to be carried: a few hundred updates solve it."""
    config = TrainConfig(
        hidden_size=16, num_pairs=1, train_size=3000, val_size=200, test_size=200, epochs=3, batch_size=32, lr=3e-3
    )
    assert train(config, log=False)["test_error"] < 0.2


@pytest.mark.parametrize(
    "argv",
    [
        ["--hidden-size", "0"],
        ["-K", "0"],
        ["-K", "27"],
        ["--model", "transformer"],
        ["--decay-rate", "0"],
        ["--decay-rate", "1.5"],
        ["--fast-learning-rate", "-1"],
        ["--fast-learning-rate", "bal"],
        ["--core-kwargs", "foo=1"],
        ["--core-kwargs", "decay_rate=0.9"],
        ["--core-kwargs", "gated=maybe"],
        ["--model", "gru", "--core-kwargs", "gated=true"],
        ["--lr", "0"],
        ["--epochs", "x"],
        ["--json", "/nonexistent-folder/r.json"],
    ],
)
def test_bad_arguments_one_line_and_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m bench.assoc: error:")


def test_command_line_bad_argument_has_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.assoc", "--hidden-size", "-3"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1

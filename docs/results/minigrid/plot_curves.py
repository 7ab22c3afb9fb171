"""Rollout success and episode length of the MiniGrid MemoryS7 runs in this folder -> docs/minigrid7_recipes.png.

python docs/results/minigrid/plot_curves.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
CURVES = {
    "LSTM, chunks of 8, lr 2e-4": "s7_chunk8_s0.json",
    "LSTM shared with the critic, chunks of 8, lr 2e-4": "s7_chunk8-shared-gradient_s0.json",
    "fast weights, lr 2e-4 (train.ppo)": "s7_fast-weights_train-ppo_s0.json",
    "LSTM, lr 1e-3 (train.ppo)": "s7_lstm_train-ppo_lr1e-3_s0.json",
    "fast weights, lr 1e-3 (train.ppo)": "s7_fast-weights_train-ppo_lr1e-3_s0.json",
    "LSTM, lr 1e-3, entropy 0.01 (train.ppo)": "s7_lstm_train-ppo_lr1e-3_ent0.01_s0.json",
    "fast weights, lr 1e-3, entropy 0.01 (train.ppo)": "s7_fast-weights_train-ppo_lr1e-3_ent0.01_s0.json",
    "diagnostic: cue in view, LSTM, lr 2e-4": "s7_cue_in_view_lr0.0002_seq8.json",
    "diagnostic: cue in view, LSTM, lr 1e-3": "s7_cue_in_view_lr0.001_seq8.json",
}

if __name__ == "__main__":
    figure, (success_axis, length_axis) = plt.subplots(1, 2, figsize=(13, 4.5))
    for label, name in CURVES.items():
        rows = json.loads((HERE / name).read_text())
        steps = [row[0] / 1e6 for row in rows]
        style = "--" if label.startswith("diagnostic") else "-"
        success_axis.plot(steps, [row[1] for row in rows], style, label=label, linewidth=1)
        length_axis.plot(steps, [row[2] for row in rows], style, label=label, linewidth=1)
    success_axis.set(xlabel="env steps (M)", ylabel="rollout success rate (last 100 episodes)", ylim=(0, 1.05))
    success_axis.axhline(0.5, color="grey", linewidth=0.5)
    length_axis.set(xlabel="env steps (M)", ylabel="mean episode length", yscale="log")
    length_axis.legend(fontsize=7)
    figure.suptitle("MiniGrid MemoryS7, 3x3 view, RecurrentPPO (seed 0)")
    figure.tight_layout()
    figure.savefig(HERE.parent.parent / "minigrid7_recipes.png", dpi=110)

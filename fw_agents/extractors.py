"""Features extractors for small symbolic grid observations (MiniGrid with a 3x3 .. 7x7 view).

SB3's NatureCNN needs >= 36x36 pixel images; MiniGrid's symbolic view is tiny and holds categorical ids
(object, colour, state per cell), for which an embedding is the natural encoding (an id is not a
brightness). :class:`MiniGridSymbolicExtractor` embeds the ids, runs two 2x2 convolutions and appends the
agent's direction.

Usage with the envs of ``envs.minigrid_memory`` (Dict observation ``{"image", "direction"}``)::

    from sb3_contrib import RecurrentPPO
    from fw_agents.extractors import MiniGridSymbolicExtractor
    model = RecurrentPPO("MultiInputLstmPolicy", "fw_agents/MiniGrid-MemoryS7-v0",
                         policy_kwargs={"features_extractor_class": MiniGridSymbolicExtractor,
                                        "features_extractor_kwargs": {"features_dim": 64}})
"""

from __future__ import annotations

import gymnasium as gym
import torch
from gymnasium import spaces
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

#: Number of ids per channel of a symbolic cell: object, colour, state (MiniGrid's encoding).
SYMBOL_SIZES: tuple[int, int, int] = (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX))


class MiniGridSymbolicExtractor(BaseFeaturesExtractor):
    """Embed a ``(v, v, 3)`` grid of MiniGrid ids, 2x2 convolutions, concatenate the direction, project.

    Input (after SB3's preprocessing): ``obs["image"]`` float ``(B, v, v, 3)`` holding integer ids,
    ``obs["direction"]`` one-hot ``(B, 4)`` (optional key). Output: ``(B, features_dim)``, ReLU.

    Args:
        observation_space: Dict with an ``"image"`` Box of shape ``(v, v, 3)`` (v >= 3) and optionally a
            ``"direction"`` Discrete(4).
        features_dim: output size.
        embed_dim: embedding size per id; the three channel embeddings of a cell are summed.
        channels: output channels of the two 2x2 convolutions (v -> v-1 -> v-2 cells per side).
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        features_dim: int = 64,
        embed_dim: int = 8,
        channels: tuple[int, int] = (16, 32),
    ) -> None:
        super().__init__(observation_space, features_dim)
        if not isinstance(observation_space, spaces.Dict) or "image" not in observation_space.spaces:
            raise ValueError(f"observation_space must be a Dict with an 'image' key, got {observation_space}")
        h, w, c = observation_space["image"].shape
        if c != 3 or min(h, w) < 3:
            raise ValueError(f"observation_space['image'] must have shape (v, v, 3) with v >= 3, got {(h, w, c)}")
        self.has_direction = "direction" in observation_space.spaces
        # One table for the three channels; channel k's ids are shifted by the sizes of channels < k.
        self.register_buffer("offsets", torch.tensor([0, SYMBOL_SIZES[0], SYMBOL_SIZES[0] + SYMBOL_SIZES[1]]))
        self.embedding = nn.Embedding(sum(SYMBOL_SIZES), embed_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(embed_dim, channels[0], kernel_size=2),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], kernel_size=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        n_conv = channels[1] * (h - 2) * (w - 2)
        self.linear = nn.Sequential(nn.Linear(n_conv + 4 * self.has_direction, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = observations["image"].long()  # (B, v, v, 3)
        ids = torch.minimum(ids, ids.new_tensor(SYMBOL_SIZES) - 1)  # guard against out-of-range ids
        x = self.embedding(ids + self.offsets).sum(dim=3)  # (B, v, v, E)
        x = self.conv(x.permute(0, 3, 1, 2))  # (B, C * (v-2)^2)
        if self.has_direction:
            # SB3 one-hots Discrete obs; rollout buffers keep a trailing (1,) dim, hence (B, 1, 4) -> (B, 4).
            x = torch.cat([x, observations["direction"].float().reshape(x.shape[0], -1)], dim=1)
        return self.linear(x)

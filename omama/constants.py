"""The facts every stage shares, defined once: splits, directions, camera roles. The patch
size and the widths belong to the backbone (`omama.backbones`).

Directions are the single table of names: the CLI value (`exo2ego`), the pair-file part
(`exoego`), the candidate folder part (`EXO2EGO`) and the challenge JSON key (`exo-ego`).
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")
OFFICIAL_MAX_SIDE = 480  # the official evaluator compares masks at longest side 480


@dataclass(frozen=True)
class Direction:
    """One matching direction and every name it goes by."""

    name: str  # CLI and cache: "exo2ego"
    pair_setting: str  # pair files: "{split}_{pair_setting}_pairs.json"
    challenge_key: str  # challenge JSON section
    source_is_ego: bool

    @property
    def masks_part(self) -> str:
        """Candidate folder part: `Masks_{SPLIT}_{masks_part}`."""
        return self.name.upper()


DIRECTION_TABLE = {
    "exo2ego": Direction("exo2ego", "exoego", "exo-ego", source_is_ego=False),
    "ego2exo": Direction("ego2exo", "egoexo", "ego-exo", source_is_ego=True),
}
DIRECTIONS = tuple(DIRECTION_TABLE)


def direction_info(direction: str) -> Direction:
    """The table row of `direction`; an unknown name is a one-line error."""
    from omama.errors import OmamaError

    try:
        return DIRECTION_TABLE[direction]
    except KeyError:
        raise OmamaError(
            f"direction: unknown direction {direction!r} (expected exo2ego or ego2exo)"
        ) from None


def is_ego(cam: str) -> bool:
    """Ego-Exo4D names the egocentric (Aria) camera `aria*`; every other camera is exo."""
    return "aria" in cam


# Temperature of the matching loss, CE(sims / TEMPERATURE) (the reference's 0.07); the
# visibility confidence reads the model's own probabilities at the same temperature.
TEMPERATURE = 0.07

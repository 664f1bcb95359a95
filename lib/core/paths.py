"""Where things live: the repository root and its standard folders (one definition for the kit)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO", "CHECKPOINTS", "BUILD", "TRAIN_STATE", "NOTEBOOKS", "FIGURES"]

REPO = Path(__file__).resolve().parents[2]
CHECKPOINTS = REPO / "data" / "checkpoints"   # committed, exported weights with manifests
BUILD = REPO / "build"                        # everything a run writes that is not committed
TRAIN_STATE = BUILD / "train"                 # resumable training states
NOTEBOOKS = REPO / "notebooks"                # the numbered notebooks (committed without outputs)
FIGURES = REPO / "figures"                    # the committed figures and tables (notebooks' default parameters)

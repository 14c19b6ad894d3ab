"""Feature extractors by name (the edge: CLI and configs): ``digits``, ``mnist``, ``inception``.

Library code passes extractor functions; this table only turns a config's or a command line's
name into one.
"""

from __future__ import annotations

import os
from typing import Callable

FEATURES = ("digits", "mnist", "inception")
INCEPTION_WEIGHTS_ENV = "JAXSCORE_INCEPTION_WEIGHTS"


def build_extractor(name: str, *, inception_weights: str | None = None, mnist_path: str | None = None) -> Callable:
    """``extractor(images [B, H, W, C] in [-1, 1]) -> (features [B, F], logits [B, K])`` for ``name``:

    * ``digits``: the project's 8×8 digits classifier (shipped weights; 16×16 input is averaged down);
    * ``mnist``: the same network trained on the MNIST train split under ``mnist_path`` on first
      use and cached (``~/.cache/jaxscore``);
    * ``inception``: pytorch-fid's FID Inception-v3 from converted weights ``inception_weights``
      (default ``$JAXSCORE_INCEPTION_WEIGHTS``; see ``jaxscore convert-inception``).
    """
    if name == "digits":
        from jaxscore.evaluation.digits_classifier import digits_extractor

        return digits_extractor()
    if name == "mnist":
        from jaxscore.evaluation.digits_classifier import mnist_extractor

        if not mnist_path:
            raise ValueError("features 'mnist': expected the folder of the MNIST IDX files (config.data.path), got none.")
        return mnist_extractor(data_path=mnist_path)
    if name == "inception":
        from jaxscore.evaluation.inception import inception_extractor, load_inception_params

        path = inception_weights or os.environ.get(INCEPTION_WEIGHTS_ENV)
        if not path:
            from jaxscore.evaluation.inception import HOW_TO_GET_WEIGHTS

            raise FileNotFoundError(f"features 'inception': no weights file given (--inception-weights or "
                                    f"${INCEPTION_WEIGHTS_ENV}).\n{HOW_TO_GET_WEIGHTS}")
        return inception_extractor(load_inception_params(path))
    raise ValueError(f"features: expected one of {list(FEATURES)}, got {name!r}.")

r"""A sampler is one object that knows its facts (as a diffrax solver knows its ``order()``).

:class:`Sampler` holds the sampler function and what the rest of the library reads about it: the
score evaluations a run costs for given options (:meth:`Sampler.nfe`, :meth:`Sampler.evals_per_step`,
:meth:`Sampler.steps_for_nfe`), whether it uses noise after the prior draw
(:meth:`Sampler.deterministic`), whether it solves with adaptive steps (``steps=None``), and its
options with their defaults (:attr:`Sampler.options`, read once from the function's signature).
The registry (:data:`jaxscore.samplers.api.SAMPLERS`), ``nfe_for_steps`` / ``steps_for_nfe``, the
CLI's option checks, batched sampling and the tests read these facts, so adding a sampler is one
file (the function and its ``Sampler``) plus one registry line.

NFE of a run with ``steps`` steps and options ``o`` (defaults filled in from the signature):

.. math:: \mathrm{NFE} = \texttt{steps}\cdot\texttt{per\_step}(o) + \texttt{extra}(o) + [\texttt{denoise}]

(``denoise="auto"`` resolved at the step count).

Every sampler meets one contract, checked when its ``Sampler`` is made: it is called as
``fn(key, score_fn, sde, shape, *, steps, denoise, return_info, return_trajectory, example_offset,
...)`` and draws example ``i`` from ``fold_in(key, example_offset + i)`` (batch-size invariant), which
is what batched and device-sharded sampling rely on.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

from jaxscore.samplers.grids import resolve_denoise

# arguments every sampler has that are not options a user chooses per run (the CLI's ``--option``)
INTERNAL = frozenset({"key", "score_fn", "sde", "shape", "steps", "return_info", "return_trajectory",
                      "example_offset", "x_init"})
# what every sampler accepts (checked when its Sampler is made)
CONTRACT = ("key", "score_fn", "sde", "shape", "steps", "denoise", "return_info", "return_trajectory",
            "example_offset")


def one(**_) -> int:
    return 1


def zero(**_) -> int:
    return 0


def always(**_) -> bool:
    return True


def never(**_) -> bool:
    return False


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
    """A registered sampler: ``fn`` and its facts.

    ``per_step(**o)``: score evaluations per step; ``extra(**o)``: evaluations outside the steps
    besides ``denoise`` (a final corrector, a first-same-as-last stage, minus a skipped one);
    ``noise_free(**o)``: no noise after the prior draw; ``adaptive``: accepts ``steps=None``.
    Each receives the resolved options (defaults filled in) as keywords and ignores the rest.
    """

    name: str
    fn: Callable
    per_step: Callable[..., int] = one
    extra: Callable[..., int] = zero
    noise_free: Callable[..., bool] = never
    adaptive: bool = False

    def __post_init__(self):
        params = inspect.signature(self.fn).parameters
        missing = [p for p in CONTRACT if p not in params]
        if missing:
            raise TypeError(f"sampler {self.name!r}: expected a function taking {CONTRACT}, "
                            f"got {self.fn.__name__}{inspect.signature(self.fn)} (missing {missing}).")

    @functools.cached_property
    def defaults(self) -> dict[str, Any]:
        """Every keyword the function takes with its default (``steps`` included)."""
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values()
                if p.default is not inspect.Parameter.empty}

    @functools.cached_property
    def options(self) -> dict[str, Any]:
        """The options a user picks (name -> default), i.e. the keywords minus :data:`INTERNAL`."""
        return {k: v for k, v in self.defaults.items() if k not in INTERNAL}

    def resolve(self, options: dict) -> dict[str, Any]:
        """``options`` over the defaults; an unknown name is a ``TypeError`` (as the call would be)."""
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(f"sampler {self.name!r}: unexpected keyword argument(s) {unknown}; "
                            f"its options are {sorted(self.options)}.")
        return {**self.defaults, **options}

    def evals_per_step(self, **options) -> int:
        """Score evaluations per step (``denoise`` adds one in total, not per step)."""
        return int(self.per_step(**self.resolve(options)))

    def _fixed(self, options: dict, steps: int) -> tuple[int, int]:
        """``(evaluations per step, evaluations outside the steps incl. denoise)`` of a ``steps``-step run
        (``denoise="auto"`` depends on the step count: :func:`jaxscore.samplers.grids.resolve_denoise`)."""
        o = self.resolve(options)
        return int(self.per_step(**o)), int(self.extra(**o)) + int(bool(resolve_denoise(o["denoise"], steps)))

    def nfe(self, steps: int, **options) -> int:
        """Score evaluations of a run of ``steps`` fixed steps (what ``info["nfe"]`` reports)."""
        if steps is None:
            raise ValueError(f"sampler {self.name!r}: steps=None (adaptive) has no NFE known in advance; "
                             f"its info['nfe'] reports what the run used.")
        per, extra = self._fixed(options, int(steps))
        return int(steps) * per + extra

    def steps_for_nfe(self, nfe: int, **options) -> int:
        """Largest ``steps`` whose :meth:`nfe` does not exceed ``nfe``; at least 1."""
        o = self.resolve(options)
        per = int(self.per_step(**o))
        steps = max(1, (int(nfe) - int(self.extra(**o))) // per)  # the most steps any final step allows
        while steps > 1 and self.nfe(steps, **options) > int(nfe):  # the final step may depend on the step count
            steps -= 1
        return steps

    def deterministic(self, **options) -> bool:
        """True when the sampler uses no noise after the prior draw (for these options)."""
        return bool(self.noise_free(**self.resolve(options)))

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def __call__(self, key, score_fn, sde, shape, **kwargs):
        return self.fn(key, score_fn, sde, shape, **kwargs)

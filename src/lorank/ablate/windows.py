"""The layer windows of the ``layer-windows`` sweep and the one finding 4 is decided on (its target window).

The paper's finding 4 names layers 5-15 of its 32-layer models. A study declares the window its verdict tests
(``verdicts: {target_window: "3-9"}``; default the paper's 5-15), so that a model of another depth is tested at the
same depth fraction; the sweep scores that window beside its regular ones, and every text that names it takes its
label from here. Pure: no model, no files."""
from __future__ import annotations

import re
from typing import Any

from lorank.errors import ConfigError

#: a layer window: (first, last) layer, both included
Window = tuple[int, int]

#: the paper's "layers 5-15" (of its models' 32 layers): finding 4's window unless a study declares another
PAPER_WINDOW: Window = (5, 15)

_SPAN = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")
_CONFIG = re.compile(r"only L(\d+)-(\d+)")


def read_window(value: Any) -> Window:
    """``"3-9"``, ``[3, 9]`` or ``(3, 9)`` -> ``(3, 9)``; a ValueError that says what is wrong otherwise (pydantic
    validators raise it as it is; :func:`parse_window` names the field)."""
    if isinstance(value, str):
        m = _SPAN.fullmatch(value)
        if not m:
            raise ValueError(f"{value!r} is not a layer window: give 'first-last' (e.g. '3-9') or [first, last]")
        lo, hi = int(m[1]), int(m[2])
    elif (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        lo, hi = value
    else:
        raise ValueError(f"{value!r} is not a layer window: give 'first-last' (e.g. '3-9') or [first, last], two "
                         "layer numbers")
    if lo < 0:
        raise ValueError(f"{value!r}: a layer number is 0 or more")
    if hi < lo:
        raise ValueError(f"{value!r}: the window ends (layer {hi}) before it starts (layer {lo})")
    return lo, hi


def parse_window(value: Any, where: str = "verdicts.target_window") -> Window:
    """:func:`read_window`, its problem raised as a ConfigError that names `where` (the field or option)."""
    try:
        return read_window(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def window_problem(window: Window, n_layers: int, model: str) -> str | None:
    """Why `window` cannot be placed on a model of `n_layers` layers (None: it can)."""
    if window[1] >= n_layers:
        return (f"{window_label(window)} is outside {model}'s {n_layers} layers (L0-{n_layers - 1}): declare a "
                "window within them")
    return None


def window_label(window: Window) -> str:
    """``L3-9``: how texts and test names write a window."""
    return f"L{window[0]}-{window[1]}"


def window_config(window: Window) -> str:
    """``only L3-9``: the ablation configuration that keeps the window's LoRA deltas alone."""
    return f"only {window_label(window)}"


def config_window(config: str) -> Window | None:
    """The window of a layer-window configuration (``only L10-20`` -> ``(10, 20)``); None for any other."""
    m = _CONFIG.fullmatch(config)
    return (int(m[1]), int(m[2])) if m else None


def paper_window_text(window: Window) -> str:
    """How a text names finding 4's window: "the paper's layers 5-15", and for a study that declares another one
    "the paper's layers 5-15 (declared here: L3-9)"."""
    text = f"the paper's layers {PAPER_WINDOW[0]}-{PAPER_WINDOW[1]}"
    return text if window == PAPER_WINDOW else f"{text} (declared here: {window_label(window)})"


def layer_windows(layers: list[int], window: int, stride: int | None = None,
                  target: Window = PAPER_WINDOW) -> list[Window]:
    """The windows of the ``layer-windows`` sweep over the adapted `layers`: width `window` (at most the number of
    layers), every `stride` layers (default half the width), the last one flush with the top layer; then `target`
    when it is not one of them and its last layer is adapted."""
    w = max(1, min(window, len(layers)))
    step = stride or max(1, w // 2)
    starts = list(range(layers[0], layers[-1] - w + 2, step))
    if not starts or starts[-1] != layers[-1] - w + 1:
        starts.append(layers[-1] - w + 1)
    spans = [(s, s + w - 1) for s in starts]
    if target[1] <= layers[-1] and target not in spans:
        spans.append(target)
    return spans

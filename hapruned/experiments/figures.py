"""The figures, drawn on matplotlib ``Figure`` objects (no pyplot state; PNGs are written by the Agg
canvas) so that callers and tests can read back exactly what is plotted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SETUP_TITLES = {"A": "setup A (no primary users)", "B": "setup B (channels busy w.p. 0.2)"}
REWARD_LABEL = r"episode reward $\Sigma_t\, r_t$ (bit/s/Hz)"


def new_figure(panels: int, title: str, panel_width: float = 5.5, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_width * panels, height), dpi=100, layout="constrained")
    fig.suptitle(title)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


LEVEL_STYLES = (":", "--", "-.")


def curves_figure(curves: dict, title: str, ylabel: str, levels: dict | None = None, names=(), steps=False):
    """One panel per setup: a line per method (``curves[setup][method]`` holds ``iteration``,
    ``mean``, ``std``) with a mean ± std band, and a black horizontal line per ``levels[setup][name]``.
    ``names`` fixes each method's colour (its index), the same in every figure; ``steps`` draws each
    value held until the next one."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    palette = colormaps["tab10"]
    fig, axes = new_figure(len(curves), title)
    for ax, (setup, by_method) in zip(axes, curves.items()):
        for name, curve in by_method.items():
            x, mean, std = (np.asarray(curve[k], dtype=float) for k in ("iteration", "mean", "std"))
            color = palette(list(names).index(name) % 10 if name in names else 9)
            ax.plot(x, mean, label=name, color=color, drawstyle="steps-post" if steps else "default")
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0,
                            step="post" if steps else None)
        for style, (name, level) in zip(LEVEL_STYLES * 3, (levels or {}).get(setup, {}).items()):
            ax.axhline(level, label=f"{name} (mean over seeds)", color="black", linestyle=style, linewidth=1.2)
        ax.set_title(SETUP_TITLES.get(setup, f"setup {setup}"))
        ax.set_xlabel("training iteration")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # one legend beside the panels: they share their methods, and it hides no curve
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right center", fontsize="small")
    return fig


def errorbar_figure(field: str, labels, mean, std, title: str, ylabel: str = REWARD_LABEL):
    """Mean ± std against the values of one swept field (placed evenly, labelled with their values)."""
    fig, (ax,) = new_figure(1, title, panel_width=6.0)
    positions = np.arange(len(labels))
    ax.errorbar(positions, mean, yerr=std, marker="o", capsize=4, label="mean ± std over seeds")
    ax.set_xticks(positions, [str(label) for label in labels])
    ax.set_xlabel(field)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def save(fig, path) -> Path:
    path = Path(path)
    fig.savefig(path)
    return path

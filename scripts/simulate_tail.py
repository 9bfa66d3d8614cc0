"""Where do reward errors cause over-optimization? The paper's tail argument, simulated
(`rubric_rft.evaluation.theory`).

    python scripts/simulate_tail.py --out outputs/tail_sim
    python scripts/simulate_tail.py --out DIR --seeds 500 --n-responses 5000 --distribution lognormal
    python scripts/simulate_tail.py --out DIR --kinds noise --noise-scale 1.0 --width 0.2

Per seed: N responses with true rewards (standardized), π₀ uniform over them, and a proxy equal to the true
reward except in one band of `--width` (bottom, middle, top, or the same number of responses everywhere),
where it is shuffled or noised. The KL-regularized optimum π_β ∝ π₀·exp(proxy/β) (a log-spaced β sweep) and
best-of-n under the proxy are scored on the true reward. Then a proxy that ranks only the top X% correctly:
how large must X be for the true reward to come within `--tolerance` of the optimum?

Writes to --out: reward_vs_kl.png, win_rate_vs_kl.png, top_fraction.png and results.json (means and 95%
bootstrap intervals over seeds). Tables are at fixed KLs, each seed's β solved to hit them exactly.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rubric_rft.evaluation import theory  # noqa: E402
from rubric_rft.stats import resampled_means  # noqa: E402

COLORS = {"correct": "black", "bottom": "tab:blue", "middle": "tab:green", "top": "tab:red", "everywhere": "tab:purple"}
PLACEMENTS = ("correct", *theory.PLACEMENTS)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/tail_sim", help="Folder for the PNGs and results.json.")
    parser.add_argument("--seeds", type=int, default=200, help="Independent response sets.")
    parser.add_argument("--n-responses", type=int, default=2000, help="Responses per set (N).")
    parser.add_argument("--distribution", default="normal", choices=theory.DISTRIBUTIONS)
    parser.add_argument("--kinds", nargs="+", default=list(theory.CORRUPTIONS), choices=theory.CORRUPTIONS)
    parser.add_argument("--width", type=float, default=theory.DEFAULT_WIDTH, help="Band width, a fraction of N.")
    parser.add_argument("--noise-scale", type=float, default=theory.DEFAULT_NOISE_SCALE, help="Noise std / std(r).")
    parser.add_argument("--beta-min", type=float, default=0.01)
    parser.add_argument("--beta-max", type=float, default=100.0)
    parser.add_argument("--n-betas", type=int, default=25)
    parser.add_argument("--max-n", type=int, default=1024, help="Largest best-of-n (powers of 2 up to it).")
    parser.add_argument("--high-kl", type=float, help="KL of the tables (default: best-of-max-n's, log n - 1 + 1/n).")
    parser.add_argument("--low-kl", type=float, default=0.01, help="A weak-optimization KL for the tables.")
    parser.add_argument("--x-kls", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0], help="More KLs for X.")
    parser.add_argument("--x-step", type=float, default=0.05, help="Grid of X (top fraction ranked correctly).")
    parser.add_argument("--tolerance", type=float, default=0.01, help="X suffices within this share of the gain.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def interval(values: np.ndarray, seed: int) -> dict[str, list | float]:
    est = theory.seed_interval(values, seed=seed)
    return {"mean": est.mean.tolist(), "low": est.low.tolist(), "high": est.high.tolist()}


def summarize(curves: theory.Curves, seed: int) -> dict:
    """Mean KL over seeds, and reward and win rate with their intervals, along a sweep."""
    return {"kl": curves.kl.mean(axis=0).tolist(), "reward": interval(curves.reward, seed),
            "win_rate": interval(curves.win_rate, seed)}


def cell(values: np.ndarray, seed: int, digits: int = 3) -> str:
    est = theory.seed_interval(values, seed=seed)
    return f"{est.mean:.{digits}f} [{est.low:.{digits}f}, {est.high:.{digits}f}]"


def share(x: float, fractions: np.ndarray) -> str:
    """A fraction as a percentage; the grid's smallest value reads as an upper bound (X may be smaller still)."""
    return f"≤{x:.0%}" if x == fractions[0] else f"{x:.0%}"


def plot_curves(results: dict, metric: str, ylabel: str, high_kl: float, path: Path, args) -> None:
    kinds = list(results)
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.8), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for placement, res in results[kind].items():
            sweep, bon, color = res["kl_regularized"], res["best_of_n"], COLORS[placement]
            # correct drawn wide and faint, bottom a little wider than the rest: curves that coincide stay visible
            style = {"correct": {"lw": 4, "alpha": 0.3, "zorder": 1}, "bottom": {"lw": 2.5, "zorder": 2}}.get(
                placement, {"lw": 1.5, "zorder": 3}
            )
            ax.plot(sweep["kl"], sweep[metric]["mean"], color=color, label=placement, **style)
            ax.fill_between(sweep["kl"], sweep[metric]["low"], sweep[metric]["high"], color=color, alpha=0.15, lw=0)
            ax.plot(bon["kl"], bon[metric]["mean"], color=color, ls="--", marker=".", ms=4, **style)
        ax.axvline(high_kl, color="grey", ls=":", lw=1)
        if metric == "win_rate":
            ax.axhline(0.5, color="grey", lw=0.8)
        what = "shuffled" if kind == "shuffle" else f"+ noise (σ = {args.noise_scale:g}·std r)"
        ax.set_title(f"proxy {what} in a {args.width:.0%} band")
        ax.set_xlabel("KL(π ‖ π₀), nats")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].plot([], [], color="grey", label="KL-regularized π_β")
    axes[0][0].plot([], [], color="grey", ls="--", marker=".", label="best-of-n (n = 1, 2, 4, …)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{ylabel} against KL; mean and 95% interval over {args.seeds} seeds, N = {args.n_responses}, "
                 f"{args.distribution} rewards; dotted: KL of the tables")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_top_fraction(fractions, reward: np.ndarray, gain: np.ndarray, base: float, kls, best, args, path) -> None:
    """Left: reward at the highest KL, its band the paired 95% interval of (reward - optimum) drawn around the
    optimum's mean: the seed-to-seed spread of the optimum itself would hide the effect of X."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    pct = 100 * fractions
    optimum = reward[:, -1].mean()
    paired = theory.seed_interval(reward - reward[:, -1:], seed=args.seed)
    left.plot(pct, optimum + paired.mean, color="tab:red", marker=".")
    left.fill_between(pct, optimum + paired.low, optimum + paired.high, color="tab:red", alpha=0.2, lw=0)
    left.axhline(optimum, color="black", lw=1, label=f"optimum (X = 100%): {optimum:.3f}")
    left.axhline(base + (1 - args.tolerance) * (optimum - base), color="black", ls="--", lw=1,
                 label=f"{1 - args.tolerance:.0%} of the gain over π₀")
    left.axvline(100 * best[-1], color="tab:red", ls=":",
                 label=f"smallest sufficient X: {share(best[-1], fractions)}")
    left.set(xlabel="X: top % of responses the proxy ranks correctly", ylabel="true reward E_π[r]",
             title=f"true reward at KL = {kls[-1]:.2f} nats (π₀: {base:.3f}; band: paired 95% CI)")
    left.legend(fontsize=8, loc="lower right")
    for i, (kl, x) in enumerate(zip(kls, best, strict=True)):
        color = plt.cm.viridis(i / max(1, len(kls) - 1))
        right.plot(pct, gain[i], color=color, marker=".", label=f"KL = {kl:.2f}: X = {share(x, fractions)}")
        right.plot(100 * x, gain[i, list(fractions).index(x)], "o", color=color, mfc="none", ms=9)
    right.axhline(1 - args.tolerance, color="black", ls="--", lw=1)
    right.set(xlabel="X: top % of responses the proxy ranks correctly", ylabel="share of the optimal gain over π₀",
              title="share of the optimal gain recovered (○: smallest sufficient X)")
    right.set_ylim(max(0.0, float(np.nanmin(gain)) - 0.05), 1.02)
    right.legend(fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rewards = theory.sample_rewards(args.seeds, args.n_responses, args.distribution, seed=args.seed)
    betas = np.geomspace(args.beta_max, args.beta_min, args.n_betas)  # low KL to high KL
    ns = 2 ** np.arange(int(np.log2(args.max_n)) + 1)
    high_kl = args.high_kl if args.high_kl is not None else float(theory.best_of_n_kl(int(ns[-1]))[0])
    if not 0 < args.low_kl < high_kl < np.log(args.n_responses):
        sys.exit(f"error: need 0 < --low-kl < high KL ({high_kl:.3g}) < log N ({np.log(args.n_responses):.3g}); "
                 "lower --max-n or --high-kl, or raise --n-responses")
    table_kls = [args.low_kl, high_kl]
    base = rewards.mean(axis=1)

    results, per_seed = {}, {}
    for kind in args.kinds:
        results[kind], per_seed[kind] = {}, {}
        for placement in PLACEMENTS:
            proxy = rewards if placement == "correct" else theory.corrupt(
                rewards, placement, kind, width=args.width, noise_scale=args.noise_scale, seed=args.seed + 1
            )
            sweep = theory.kl_regularized(rewards, proxy, betas)
            bon = theory.best_of_n(rewards, proxy, ns)
            per_seed[kind][placement] = theory.kl_regularized_at(rewards, proxy, table_kls)
            results[kind][placement] = {
                "kl_regularized": {"beta": betas.tolist(), **summarize(sweep, args.seed)},
                "best_of_n": {"n": ns.tolist(), **summarize(bon, args.seed)},
            }

    fractions = np.round(np.arange(args.x_step, 1 + 1e-9, args.x_step), 10)
    if fractions[-1] != 1.0:
        fractions = np.append(fractions, 1.0)
    x_kls = sorted({*(k for k in args.x_kls if 0 < k < high_kl), high_kl})
    top = theory.top_fraction_sweep(rewards, fractions, x_kls, seed=args.seed + 2)  # (seeds, F, K)
    optimum = top.reward[:, -1, :]
    mean_reward = top.reward.mean(axis=0).T  # (K, F)
    best = theory.smallest_sufficient_fraction(
        fractions, mean_reward, base.mean(), optimum.mean(axis=0), args.tolerance
    )
    boot = [resampled_means(v, seed=args.seed) for v in (top.reward, base, optimum)]
    best_boot = theory.smallest_sufficient_fraction(
        fractions, np.moveaxis(boot[0], 1, -1), boot[1][:, None], boot[2], args.tolerance
    )
    best_low, best_high = np.nanquantile(best_boot, [0.025, 0.975], axis=0)
    gain = (mean_reward - base.mean()) / (optimum.mean(axis=0) - base.mean())[:, None]

    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(f"{args.seeds} seeds x N = {args.n_responses} {args.distribution} rewards; band width "
                  f"{args.width:.0%}; noise σ = {args.noise_scale:g}·std(r); π₀: true reward {base.mean():.3f}, "
                  "win rate 0.500")
    which = f"best-of-{ns[-1]}'s KL" if args.high_kl is None else "--high-kl"
    table_rows = {}
    for kind in args.kinds:
        correct = per_seed[kind]["correct"].reward
        table = Table(title=f"{kind}: mean [95% CI] over seeds; gain kept = (reward - π₀) / (optimum - π₀) at "
                            f"the same KL; {high_kl:.2f} nats = {which}")
        for column in ("placement", f"gain kept @ KL {args.low_kl:g}", f"gain kept @ KL {high_kl:.2f}",
                       f"reward @ KL {high_kl:.2f}", f"win rate @ KL {high_kl:.2f}", f"best-of-{ns[-1]}: reward, win"):
            table.add_column(column, justify="left" if column == "placement" else "right")
        table_rows[kind] = {}
        for placement in PLACEMENTS:
            at, bon = per_seed[kind][placement], results[kind][placement]["best_of_n"]
            kept = (at.reward - base[:, None]) / (correct - base[:, None])
            row = {"gain_kept_low_kl": kept[:, 0], "gain_kept_high_kl": kept[:, 1],
                   "reward_high_kl": at.reward[:, 1], "win_rate_high_kl": at.win_rate[:, 1]}
            bon_pair = (bon["reward"]["mean"][-1], bon["win_rate"]["mean"][-1])
            table.add_row(placement, *(cell(v, args.seed) for v in row.values()), "{:.3f}, {:.3f}".format(*bon_pair))
            table_rows[kind][placement] = {
                **{k: interval(v, args.seed) for k, v in row.items()},
                "best_of_max_n_reward": bon_pair[0], "best_of_max_n_win_rate": bon_pair[1],
            }
        console.print(table)

    table = Table(title=f"How much of the top must the proxy rank correctly? Smallest X whose reward recovers "
                        f"{1 - args.tolerance:.0%} of the optimum's gain over π₀ at the same KL (X in steps of "
                        f"{args.x_step:.0%}; CI: seeds resampled)")
    for column in ("KL (nats)", "π₀ reward", "optimum reward", "reward at smallest X", "smallest X [95% CI]"):
        table.add_column(column, justify="right")
    for i, kl in enumerate(x_kls):
        j = list(fractions).index(best[i])
        ci = f"[{share(best_low[i], fractions)}, {share(best_high[i], fractions)}]"
        table.add_row(f"{kl:.2f}", f"{base.mean():.3f}", f"{optimum[:, i].mean():.3f}", f"{mean_reward[i, j]:.3f}",
                      f"{share(best[i], fractions)} {ci}")
    console.print(table)

    plot_curves(results, "reward", "true reward E_π[r]", high_kl, out / "reward_vs_kl.png", args)
    plot_curves(results, "win_rate", "win rate vs π₀", high_kl, out / "win_rate_vs_kl.png", args)
    plot_top_fraction(fractions, top.reward[:, :, -1], gain, float(base.mean()), x_kls, best,
                      args, out / "top_fraction.png")
    summary = {
        "settings": {**vars(args), "high_kl": high_kl, "x_kls": x_kls,
                     "criterion": "reward - base >= (1 - tolerance) * (optimum - base), base = π₀'s reward"},
        "base_reward": float(base.mean()),
        "curves": results,
        "table": table_rows,
        "top_fraction": {
            "fractions": fractions.tolist(), "kls": x_kls, "reward": interval(top.reward, args.seed),
            "gain_share": gain.tolist(), "smallest_sufficient": best.tolist(),
            "smallest_sufficient_ci": [best_low.tolist(), best_high.tolist()],
        },
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    console.print(f"wrote {out}/reward_vs_kl.png, win_rate_vs_kl.png, top_fraction.png, results.json "
                  f"in {summary['elapsed_s']:.1f} s")


if __name__ == "__main__":
    main()

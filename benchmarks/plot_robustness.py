#!/usr/bin/env python3
"""plot_robustness.py -- accuracy under PGD vs depth, per BN domain, adamant next to PyTorch.

Reads benchmarks/results/pgd_agreement.json (written by pgd_agreement.py) and draws
benchmarks/results/robustness_vs_depth.png: for the Mixture-BN ResNet-8/14/20, clean accuracy and
accuracy under PGD-10/PGD-50 (eps 8/255) through BN_clean and BN_adv. Both findings of the paper
show: the adversarial BN domain is what makes the network robust, and robustness grows with depth.

Run: python3 benchmarks/plot_robustness.py
"""
import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.path.join(ROOT, "benchmarks", "results")


def main():
    recs = json.load(open(os.path.join(RES, "pgd_agreement.json")))["records"]
    mbn = [r for r in recs if r["model"].startswith("mbn_resnet")]
    depth = lambda r: int(r["model"].replace("mbn_resnet", ""))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, dom in zip(axes, ("clean", "adv")):
        rows = [r for r in mbn if r["domain"] == dom]
        depths = sorted({depth(r) for r in rows})
        clean = [100 * next(r for r in rows if depth(r) == d)["adamant_clean"] for d in depths]
        ax.plot(depths, clean, "o-", color="black", label="clean")
        for steps, color in ((10, "tab:blue"), (50, "tab:red")):
            sel = sorted((r for r in rows if r["steps"] == steps), key=depth)
            if not sel:
                continue
            ax.plot([depth(r) for r in sel], [100 * r["adamant_robust"] for r in sel], "o-", color=color,
                    label="PGD-%d (adamant)" % steps)
            ax.plot([depth(r) for r in sel], [100 * r["torch_robust"] for r in sel], "x--", color=color,
                    label="PGD-%d (PyTorch)" % steps)
        ax.set_title("BN_%s" % dom)
        ax.set_xlabel("ResNet depth")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on 1,000 CIFAR-10 test images (%)")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle("Mixture-BN ResNets: accuracy under untargeted L-inf PGD, eps = 8/255")
    fig.tight_layout()
    out = os.path.join(RES, "robustness_vs_depth.png")
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()

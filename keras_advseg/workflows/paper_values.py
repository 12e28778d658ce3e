"""Published values of Liu et al. 2021 (J Digit Imaging), printed beside ours in ``report.md``.

These are the paper's numbers on BraTS 2017, quoted for comparison; they are
never used as results of this package.
"""

TABLE1 = {  # attack -> (TC, ET, WT Dice mean, input PSNR, SSIM, RMSE); eps = 0.05, 3D-UNet
    "No attack": (0.821, 0.668, 0.748, None, None, None),
    "FGSM": (0.561, 0.370, 0.549, 27.69, 0.646, 0.041),
    "i-FGSM": (0.342, 0.230, 0.393, 27.93, 0.470, 0.040),
    "targeted i-FGSM": (0.461, 0.365, 0.486, 29.48, 0.735, 0.034),
}

# Mean Dice under FGSM at eps 0, 0.05, 0.1 (Tables 2 and 3), a representative subset of rows.
TABLE2_3D = {
    "wt": {
        "No defense": (0.890, 0.676, 0.609),
        "Distillation (T=100)": (0.891, 0.807, 0.753),
        "Adversarial training 0.05": (0.880, 0.803, 0.752),
    },
    "tc": {
        "No defense": (0.826, 0.467, 0.374),
        "Distillation (T=100)": (0.801, 0.633, 0.543),
        "Adversarial training 0.05": (0.796, 0.686, 0.629),
    },
    "et": {
        "No defense": (0.670, 0.380, 0.301),
        "Distillation (T=100)": (0.693, 0.517, 0.425),
        "Adversarial training 0.05": (0.656, 0.531, 0.445),
    },
}
TABLE3_2D = {
    "wt": {
        "No defense": (0.804, 0.607, 0.549),
        "Distillation (T=100)": (0.814, 0.718, 0.684),
        "Adversarial training 0.05": (0.809, 0.757, 0.735),
    },
    "tc": {
        "No defense": (0.701, 0.481, 0.428),
        "Distillation (T=100)": (0.716, 0.611, 0.572),
        "Adversarial training 0.05": (0.695, 0.623, 0.601),
    },
    "et": {
        "No defense": (0.629, 0.444, 0.376),
        "Distillation (T=100)": (0.646, 0.554, 0.500),
        "Adversarial training 0.05": (0.611, 0.488, 0.430),
    },
}

RELATIVE_DROPS = {  # Dice reduction by FGSM / i-FGSM / targeted i-FGSM (text of the Results)
    "tc": (0.305, 0.583, 0.438),
    "et": (0.446, 0.656, 0.454),
    "wt": (0.267, 0.475, 0.350),
}

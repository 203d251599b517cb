"""`python -m selfcritic.model PRESET [PRESET ...]`: total and active parameter counts.

Builds each preset of conf/model/ on the meta device (no memory, no weights) and prints its
counts; active = what one token touches (see `count_active_parameters`).
"""

from __future__ import annotations

import argparse

from selfcritic.model.build import count_active_parameters, count_parameters, meta_model
from selfcritic.model.presets import load_preset, preset_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("presets", nargs="*", help=f"default: all of {preset_names()}")
    args = parser.parse_args()
    print(f"{'preset':20s} {'total':>16s} {'active':>16s}")
    for name in args.presets or preset_names():
        model = meta_model(load_preset(name))
        total, active = count_parameters(model), count_active_parameters(model)
        print(f"{name:20s} {total:16,d} {active:16,d}  ({total / 1e9:.2f}B / {active / 1e9:.2f}B)")


if __name__ == "__main__":
    main()

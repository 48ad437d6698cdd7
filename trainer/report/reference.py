"""The reference report's figures, the one copy in code (docs/SPEC.md, "Reference results").

Keyed by run name: the report suite's run names in configs/suites.yaml, which are the
directories trainer.suite writes under --runs. The figures are SPEC's text, digits as printed
there (0.32 is not 0.3200: the report gave two digits).
"""

from __future__ import annotations

from dataclasses import dataclass

PART1A, ABLATION = "Part 1A", "Ablation and final network"
TEST_MAP = "test mAP"
BEST_TEST_MAP = "best test mAP over the run's epochs"
LEADERBOARD = "test mAP on the leaderboard"


@dataclass(frozen=True)
class Reference:
    run: str  # run name (configs/suites.yaml, suite `report`)
    section: str  # PART1A or ABLATION
    label: str  # the row as SPEC names it
    figure: str  # SPEC's text, e.g. "0.1475"
    kind: str  # what the figure is: TEST_MAP, BEST_TEST_MAP or LEADERBOARD

    @property
    def value(self) -> float:
        return float(self.figure)


REFERENCE: tuple[Reference, ...] = (
    Reference("simple", PART1A, "SimpleClassifier", "0.1475", TEST_MAP),
    Reference("alexnet", PART1A, "AlexNet from scratch", "0.0928", TEST_MAP),
    Reference("alexnet_pretrained", PART1A, "AlexNet ImageNet-pretrained", "0.6821", TEST_MAP),
    Reference("ablation_1_basenet", ABLATION, "1. BaseNet (SimpleClassifier, SGD)", "0.1604", BEST_TEST_MAP),
    Reference("ablation_2_adam", ABLATION, "2. + Adam instead of SGD", "0.1969", BEST_TEST_MAP),
    Reference("ablation_3_nofc", ABLATION, "3. + remove the last two fc layers", "0.2146", BEST_TEST_MAP),
    Reference("ablation_4_bn", ABLATION, "4. + BatchNorm2d after convolutions", "0.2309", BEST_TEST_MAP),
    Reference("ablation_5_final", ABLATION, "5. + deeper, stride 2 (the final network)", "0.32", BEST_TEST_MAP),
    Reference("final", ABLATION, "final network + Adam + crop/flip (leaderboard)", "0.61209", LEADERBOARD),
)
BY_RUN: dict[str, Reference] = {ref.run: ref for ref in REFERENCE}
SECTIONS: tuple[str, ...] = (PART1A, ABLATION)

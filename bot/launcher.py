"""``python -m bot.launcher ARGS``: Rasa's command line, with FirstReply's changes.

Takes exactly the arguments of the ``rasa`` command (``run``, ``shell``, ``test``, ...);
``make run`` and the tests start Rasa through it. See ``bot.speedups`` (faster, same
behaviour) and ``bot.resilience`` (an action server that is briefly away loses nothing).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def preload_for_workers(config: Path = Path("config.yml")) -> None:
    """Load what every Rasa worker reads but never changes, once, before Rasa forks the workers.

    Each worker loads its model after the fork; what is loaded here instead is shared by all of
    them (copy-on-write pages that nobody writes): lingua's language models (about 380 MB,
    ``bot.i18n.warm_up_detector``) and the sentence encoders ``config``'s featurizer names (the
    model's own choice still decides what a worker uses; one loaded here and not used costs only
    memory).
    """
    from bot.i18n import warm_up_detector
    from bot.nlu.featurizer import ENCODERS, active_encoders, use_encoders

    warm_up_detector()
    names = list(ENCODERS)
    try:
        pipeline = yaml.safe_load(config.read_text(encoding="utf-8")).get("pipeline") or []
        names = next(step.get("encoders") or names for step in pipeline if str(step.get("name", "")).endswith(
            "SentenceEncoderFeaturizer"))
        use_encoders(names)
    except (OSError, AttributeError, StopIteration, ValueError, yaml.YAMLError) as error:
        log.info("encoders not loaded ahead of the workers (%s: %s); each worker loads its own",
                 type(error).__name__, error)  # fmt: skip
        return
    active_encoders()


def main() -> None:
    """Install the speed-ups and the action retries, then hand over to Rasa's own ``main``."""
    from bot import resilience, speedups

    speedups.install()
    resilience.install()
    if sys.argv[1:2] == ["run"]:
        preload_for_workers()
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", *sys.argv[1:]]
    rasa_main()


if __name__ == "__main__":
    main()

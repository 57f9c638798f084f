"""``python -m bot.launcher ARGS``: Rasa's command line, with FirstReply's changes.

Takes exactly the arguments of the ``rasa`` command (``run``, ``shell``, ``test``, ...);
``make run`` and the tests start Rasa through it. See ``bot.speedups`` (faster, same
behaviour) and ``bot.resilience`` (an action server that is briefly away loses nothing).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Install the speed-ups and the action retries, then hand over to Rasa's own ``main``."""
    from bot import resilience, speedups

    speedups.install()
    resilience.install()
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", *sys.argv[1:]]
    rasa_main()


if __name__ == "__main__":
    main()

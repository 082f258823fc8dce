"""Runs ``octo`` in this process with a hook on one step: after the wrapped step function finishes step ``STEP``
(0-based), the process sends itself the given signals, as a scheduler or a user would while that step runs.

    python -m tests.training.step_hook MODULE:FUNCTION STEP SIGNAL[,SIGNAL...] -- OCTO ARGS...

``MODULE:FUNCTION`` is the step function the loop calls (``megatron_octo.training.loop:train_step``,
``megatron_octo.rl.loop:rl_step``); its first argument is the step. ``SIGKILL`` kills the process outright (a
node failure); ``SIGINT,SIGINT`` is a double Ctrl-C.
"""

import importlib
import os
import signal
import sys


def main(argv):
    target, step, names = argv[0], int(argv[1]), argv[2].split(",")
    octo_args = argv[argv.index("--") + 1:]
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    original = getattr(module, func_name)

    def hooked(current, *args, **kwargs):
        result = original(current, *args, **kwargs)
        if current == step:
            for name in names:
                os.kill(os.getpid(), getattr(signal, name))
        return result

    setattr(module, func_name, hooked)
    from megatron_octo.cli import main as octo

    return octo(octo_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Make torchaudio importable next to a torch it was not built for, by running it without its compiled ops.

    python -m step_dist.teachers.adapters._torchaudio_compat [--check]

Why: braindecode (the ``eeg`` extra's teachers: CBraMod, LaBraM, BIOT, EEGPT) imports torchaudio when it is
imported (``braindecode.modules.filter`` takes ``fftconvolve``, ``filtfilt`` and ``lfilter`` from
``torchaudio.functional``). torchaudio is in maintenance mode and its wheels stop at 2.11, whose compiled
library does not load with a newer torch (our CPU build is 2.13): ``import torchaudio`` then fails with
"Could not load this library: .../torchaudio/lib/_torchaudio.abi3.so", and braindecode with it.
torchaudio itself supports running without its extension: ``torchaudio._extension._load_lib`` returns
False when the library file is absent, and ``torchaudio.functional`` then uses its pure-PyTorch code
(the filters braindecode needs are among them). So, only when the compiled libraries fail to load with
the installed torch, this removes them (``torchaudio/lib/*.so``). Where they load (a torch that matches,
e.g. torch 2.11 + torchaudio 2.11 on a GPU machine) nothing is touched. To get them back after moving to
a matching torch: ``pip install --force-reinstall --no-deps torchaudio==<version>``.

Exit status: 0 when torchaudio imports afterwards (or is not installed), 1 otherwise; ``--check`` only
reports. Nothing here imports torchaudio in this process: each probe runs in a fresh interpreter.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys

_PROBE = ("import torchaudio, torchaudio._extension as e; "
          "from torchaudio.functional import fftconvolve, filtfilt, lfilter; "
          "print('compiled' if e._IS_TORCHAUDIO_EXT_AVAILABLE else 'pure-python')")


def compiled_libraries() -> list[str]:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = os.path.join(list(spec.submodule_search_locations)[0], "lib")
    return sorted(glob.glob(os.path.join(lib, "*.so")) + glob.glob(os.path.join(lib, "*.pyd")))


def probe() -> tuple[bool, str]:
    """(imports, what it said): ``import torchaudio`` and the filters braindecode uses, in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    if r.returncode == 0:
        return True, r.stdout.strip()
    return False, (r.stderr.strip().splitlines() or ["(no output)"])[-1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if importlib.util.find_spec("torchaudio") is None:
        print("torchaudio is not installed: nothing to do")
        return 0
    ok, said = probe()
    if ok:
        print(f"torchaudio imports ({said} ops): nothing to do")
        return 0
    libs = compiled_libraries()
    ops_failed = "Could not load this library" in said or any(os.path.basename(p) in said for p in libs)
    if not libs or not ops_failed:
        print(f"torchaudio does not import, and not because of its compiled ops: {said}", file=sys.stderr)
        return 1
    if "--check" in argv:
        print(f"torchaudio's compiled ops do not load with this torch ({said}); "
              f"run: {sys.executable} -m step_dist.teachers.adapters._torchaudio_compat")
        return 1
    for p in libs:
        os.remove(p)
    ok, said = probe()
    print(f"torchaudio's compiled ops do not load with this torch: removed {[os.path.basename(p) for p in libs]}; "
          f"torchaudio now imports: {ok} ({said})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

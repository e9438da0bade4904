"""PyInstaller hook for bitsandbytes, used instead of the contrib one (packaging/hooks is searched first).

bitsandbytes ships one library per GPU toolkit (CUDA 11.8 ... 13.2, ROCm, XPU: ~120 MB) and the contrib
hook collects them all, with whatever CUDA runtime the build machine has. A bundle whose torch has no GPU
support can only ever load the CPU library, so that is all it gets; with a CUDA or ROCm torch, all of them.
"""

from pathlib import Path

import torch
from PyInstaller.utils.hooks import collect_dynamic_libs

binaries = collect_dynamic_libs("bitsandbytes")
if torch.version.cuda is None and torch.version.hip is None:
    binaries = [(src, dest) for src, dest in binaries if Path(src).name.startswith("libbitsandbytes_cpu")]

# As the contrib hook: bitsandbytes' kernels go through triton's JIT, which reads the .py sources.
module_collection_mode = "pyz+py"

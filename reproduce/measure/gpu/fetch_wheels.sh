#!/bin/bash
# Wheels the GPU image lacks, for window.sh to install there (the versions the 2026-11-28 window
# used: reproduce/measured/h200_2026-11-28/README.md). Run once, here, from the repository root;
# .whl/ is kept out of git by .git/info/exclude and travels with `carry`. Only jsonargparse and its
# two dependencies (1 MB): `datasets` would bring pyarrow (55 MB), which with the working tree passes
# the 64 MiB that travel, and PTB loads without it (lightning_modules/lm/ptb_data.py).
set -eu
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PY=${PYTHON:-python3}
$PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
du -sh .whl

#!/usr/bin/env bash
# The one command of a GPU session (benchmarks/README.md, "The GPU run"), from the repository root:
#   bash benchmarks/gpu_run.sh [OUT_DIR] [gpu_run.py options]      (OUT_DIR default benchmarks/results/)
# Installs the wheels carried in .whl/ (the GPU machine reaches no package index; fill .whl/
# beforehand as benchmarks/README.md says) into /tmp/site, puts them and the repository on
# PYTHONPATH and hands over to benchmarks/gpu_run.py, which counts the install in its budget.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GPU_RUN_T0=$(date +%s.%N)
export GPU_RUN_T0
install_s=60  # = INSTALL_S in gpu_run.py
wheels=${GPU_RUN_WHEELS:-$root/.whl}  # the tests point this elsewhere
# the commit measured: written into the wheel folder before the session (the tree travels without .git)
GPU_RUN_COMMIT=$(cat "$wheels/COMMIT" 2>/dev/null || git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
export GPU_RUN_COMMIT
if compgen -G "$wheels/*.whl" > /dev/null; then
  GPU_RUN_INSTALL_LOG=$(mktemp /tmp/gpu-run-install.XXXXXX)
  if [[ -f /tmp/site/.gpu-run-installed ]]; then
    echo "wheels already installed in /tmp/site" > "$GPU_RUN_INSTALL_LOG"
    GPU_RUN_INSTALL_RC=0
  else
    timeout -k 2 "$install_s" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site "$wheels"/*.whl > "$GPU_RUN_INSTALL_LOG" 2>&1
    GPU_RUN_INSTALL_RC=$?
    if [[ $GPU_RUN_INSTALL_RC != 0 && $GPU_RUN_INSTALL_RC != 124 && $GPU_RUN_INSTALL_RC != 137 ]]; then
      # pip refuses the whole set for one bad wheel (two versions of a package, a wrong platform):
      # install them one by one, so that the others still come
      # (within what is left of the install's budget: the parts' budgets start where it ends)
      echo "whole install failed (exit $GPU_RUN_INSTALL_RC); installing the wheels one by one" >> "$GPU_RUN_INSTALL_LOG"
      end=$(python3 -c "print(int($GPU_RUN_T0 + $install_s))")
      GPU_RUN_INSTALL_RC=0
      # the wheels the parts need first: what the budget leaves out should matter least
      mapfile -t ordered < <(python3 "$root/benchmarks/gpu_run.py" --install-order "$wheels" 2>/dev/null)
      (( ${#ordered[@]} )) || ordered=("$wheels"/*.whl)
      for w in "${ordered[@]}"; do
        left=$(( end - $(date +%s) ))
        if (( left < 3 )); then
          echo "install budget spent: $w and the wheels after it not installed" >> "$GPU_RUN_INSTALL_LOG"
          GPU_RUN_INSTALL_RC=124
          break
        fi
        timeout -k 2 $(( left < 20 ? left : 20 )) python3 -m pip install -q --no-index --no-deps --no-compile \
          --no-cache-dir --upgrade --target /tmp/site "$w" >> "$GPU_RUN_INSTALL_LOG" 2>&1 \
          || { echo "failed: $w" >> "$GPU_RUN_INSTALL_LOG"; GPU_RUN_INSTALL_RC=1; }
      done
    fi
    [[ $GPU_RUN_INSTALL_RC == 0 ]] && touch /tmp/site/.gpu-run-installed
  fi
  GPU_RUN_T1=$(date +%s.%N)
  export GPU_RUN_INSTALL_LOG GPU_RUN_INSTALL_RC GPU_RUN_T1
  echo "gpu_run.sh: wheel install exit $GPU_RUN_INSTALL_RC" >&2
  export PYTHONPATH=/tmp/site:$root${PYTHONPATH:+:$PYTHONPATH}
else
  echo "gpu_run.sh: no wheels in $wheels, nothing installed" >&2
  export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec python3 "$root/benchmarks/gpu_run.py" "$@"

# Sourced by packaging/setup.sh: which torch build to install, and from where.
# Needs from the caller: VPY (the venv's python), TORCH_REQ, TORCH_CPU_INDEX, say, pip_install.
# tests/test_setup_script.py sources it with fake probes (torch_ok, has_nvidia, reachable) and pip_install.

torch_ok() {  # does the venv's torch satisfy TORCH_REQ?
  "$VPY" - "$TORCH_REQ" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
from pip._vendor.packaging.requirements import Requirement
req = Requirement(sys.argv[1])
sys.exit(0 if req.specifier.contains(version(req.name), prereleases=True) else 1)
EOF
}
has_nvidia() { [[ -e /proc/driver/nvidia/version ]] || { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; }
reachable() {  # can pip reach this index (8 s)?
  "$VPY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=8)' "$1/torch/" \
    >/dev/null 2>&1
}

install_torch() {  # no NVIDIA GPU: PyTorch's CPU-only index when reachable and it has TORCH_REQ, else pip's choice
  if torch_ok; then
    :
  elif has_nvidia; then
    say "NVIDIA GPU found: installing $TORCH_REQ from PyPI (CUDA build)"
    pip_install "$TORCH_REQ"
  elif reachable "$TORCH_CPU_INDEX" && pip_install --index-url "$TORCH_CPU_INDEX" "$TORCH_REQ"; then
    say "installed $TORCH_REQ from PyTorch's CPU-only index ($TORCH_CPU_INDEX)"
  else
    say "no NVIDIA GPU; PyTorch's CPU-only index ($TORCH_CPU_INDEX) is not reachable or lacks $TORCH_REQ:"
    say "installing $TORCH_REQ from the configured package index (pip's choice)"
    pip_install "$TORCH_REQ"
  fi
}

report_torch() {  # which torch we got and how big it is, without importing it (slow; numpy may be missing)
  "$VPY" - <<'EOF'
from importlib.metadata import distribution, distributions
torch = distribution("torch")
ns: dict = {}
exec(torch.locate_file("torch/version.py").read_text(), ns)
big = [d for d in distributions() if (d.metadata["Name"] or "").lower().replace("_", "-").startswith(
    ("torch", "nvidia-", "triton"))]
mb = sum((f.size or 0) for d in big for f in (d.files or [])) / 1e6
kind = f"CUDA {ns['cuda']} build" if ns.get("cuda") else "CPU-only build"
print(f"setup: torch {torch.version} ({kind}, {mb:.0f} MB with its libraries)")
EOF
}

# Shared by bin/run and bin/test: make .venv with the project installed, idempotently.
# Re-installs only when pyproject.toml changed since the last install.
ensure_venv() {
  local extras="$1"
  local python="${PYTHON:-python3.11}"
  command -v "$python" >/dev/null || python=python3
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
  fi
  local stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing Reward Studio and its dependencies ($extras) into .venv ..."
    # torch is pinned in pyproject.toml (the CPU wheel on this disk); nothing may pull a newer one.
    .venv/bin/pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}

# Shared by the example scripts: where the service is and where images go.
#   IMAGEGEN_URL      base URL of the service (default http://127.0.0.1:8000)
#   IMAGEGEN_OUT_DIR  folder for the files the examples write (default: current folder)
#   MODEL             model id or family for the examples (default: gan)
URL="${IMAGEGEN_URL:-http://127.0.0.1:8000}"
OUT="${IMAGEGEN_OUT_DIR:-.}"
MODEL="${MODEL:-gan}"
mkdir -p "$OUT"
# -f: fail on HTTP errors, -sS: quiet but show errors.
CURL=(curl -fsS)
if [[ -n "${IMAGEGEN_API_KEY:-}" ]]; then
  CURL+=(-H "Authorization: Bearer ${IMAGEGEN_API_KEY}")
fi

#!/bin/bash
# Xcode "Run Script" build phase: build the models with edgekit and copy them into the app bundle.
#
# In Xcode: target > Build Phases > + > New Run Script Phase, shell /bin/bash, script:
#     "${SRCROOT}/edgekit-build-phase.sh"
#   Input Files:  $(SRCROOT)/edgekit.toml
#   Output Files: $(DERIVED_FILE_DIR)/edgekit/edgekit-manifest.json
# Uncheck "Based on dependency analysis" so edgekit always decides (it answers in well under a second
# when nothing changed), and place the phase before "Copy Bundle Resources".
#
# Settings (environment or build settings): EDGEKIT (command, default "edgekit"; e.g.
# "python3 -m edgekit"), EDGEKIT_CONFIG (default $SRCROOT/edgekit.toml), EDGEKIT_TARGET (e.g. tflite,
# default: the config's targets), EDGEKIT_COPY (file patterns copied into the bundle).
set -euo pipefail

EDGEKIT="${EDGEKIT:-edgekit}"
CONFIG="${EDGEKIT_CONFIG:-${SRCROOT:-.}/edgekit.toml}"
OUT="${DERIVED_FILE_DIR:-build}/edgekit"
DEST="${TARGET_BUILD_DIR:-build}/${UNLOCALIZED_RESOURCES_FOLDER_PATH:-Resources}/models"
COPY="${EDGEKIT_COPY:-*.tflite *.ort *.onnx edgekit-manifest.json}"

# Xcode runs build phases with a minimal PATH: add the usual places pip and Homebrew install to.
export PATH="${HOME}/.local/bin:/opt/homebrew/bin:/usr/local/bin:${PATH}"
export CI=true  # plain progress lines in the build log

args=(build --config "$CONFIG" --output "$OUT")
if [ -n "${EDGEKIT_TARGET:-}" ]; then
    args+=(--target "$EDGEKIT_TARGET")
fi
rc=0
# shellcheck disable=SC2086  # EDGEKIT may be a command with arguments
$EDGEKIT "${args[@]}" || rc=$?
if [ "$rc" -ne 0 ]; then
    # "error:" lines show up as build errors in Xcode's issue navigator
    echo "error: edgekit build failed (exit code $rc; 5 = a model exceeds its budget). See the lines above."
    exit "$rc"
fi

mkdir -p "$DEST"
read -r -a patterns <<< "$COPY"  # split on spaces without expanding the patterns here
shopt -s nullglob
copied=0
for pattern in "${patterns[@]}"; do
    for f in "$OUT"/$pattern; do
        cp -p "$f" "$DEST/"
        copied=$((copied + 1))
    done
done
echo "edgekit: copied $copied file(s) into $DEST"

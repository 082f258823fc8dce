#!/usr/bin/env bash
# Build the megatron-octo image (or, with --aligner, the NeMo-Aligner image) from the repository root, tagged
# NAME:VERSION and NAME:VERSION-gREVISION (megatron_octo/version.py and the git commit; "-dirty" when the tree has
# uncommitted changes). The version pins come from megatron_octo/version.py, passed as build arguments.
#
#   containers/build.sh                                   # megatron-octo:0.1.0 and megatron-octo:0.1.0-g<rev>
#   containers/build.sh --push registry.example.com/team  # also tag and push REGISTRY/megatron-octo:...
#   containers/build.sh --sqsh /shared/images/octo.sqsh   # also convert for enroot/pyxis (enroot import)
#   containers/build.sh --aligner                         # megatron-octo-aligner from containers/Dockerfile.aligner
#   containers/build.sh --dry-run                         # print the commands, run none
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --aligner  --name NAME  --push REGISTRY  --sqsh FILE  --no-cache  --dry-run  -h|--help"
}

ALIGNER=0 NAME="" PUSH="" SQSH="" NO_CACHE="" DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --aligner) ALIGNER=1 ;;
        --name) NAME="${2:?--name needs a value}"; shift ;;
        --push) PUSH="${2:?--push needs a registry, e.g. registry.example.com/team}"; shift ;;
        --sqsh) SQSH="${2:?--sqsh needs an output file, e.g. /shared/images/octo.sqsh}"; shift ;;
        --no-cache) NO_CACHE="--no-cache" ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build.sh: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

pin() {  # NAME = "value" in megatron_octo/version.py
    local value
    value="$(sed -n "s/^$1 = \"\(.*\)\"\$/\1/p" megatron_octo/version.py)"
    if [ -z "$value" ]; then echo "build.sh: error: megatron_octo/version.py has no $1" >&2; exit 2; fi
    printf '%s\n' "$value"
}

run() {  # print, then run unless --dry-run
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

VERSION="$(pin __version__)"
REVISION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then REVISION="${REVISION}-dirty"; fi

if [ "$ALIGNER" = 1 ]; then
    NAME="${NAME:-megatron-octo-aligner}"
    DOCKERFILE=containers/Dockerfile.aligner
    BUILD_ARGS=(--build-arg "ALIGNER_BASE_IMAGE=$(pin ALIGNER_BASE_IMAGE)"
                --build-arg "VLLM_VERSION=$(pin VLLM_ALIGNER)")
    for file in requirements/aligner.txt requirements/serve.txt; do
        if [ ! -f "$file" ]; then
            echo "build.sh: error: $file is missing: the aligner image installs its pins from it" >&2
            if [ "$DRY_RUN" = 0 ]; then exit 2; fi
        fi
    done
else
    NAME="${NAME:-megatron-octo}"
    DOCKERFILE=containers/Dockerfile
    BUILD_ARGS=(--build-arg "NGC_PYTORCH_IMAGE=$(pin NGC_PYTORCH_IMAGE)"
                --build-arg "MEGATRON_CORE_VERSION=$(pin MEGATRON_CORE_CONTAINER)"
                --build-arg "VLLM_VERSION=$(pin VLLM_CONTAINER)")
fi
TAGS=("$NAME:$VERSION" "$NAME:$VERSION-g$REVISION")

run docker build ${NO_CACHE:+"$NO_CACHE"} -f "$DOCKERFILE" "${BUILD_ARGS[@]}" \
    --label "org.opencontainers.image.version=$VERSION" --label "org.opencontainers.image.revision=$REVISION" \
    -t "${TAGS[0]}" -t "${TAGS[1]}" .

if [ -n "$PUSH" ]; then
    for tag in "${TAGS[@]}"; do
        run docker tag "$tag" "$PUSH/$tag"
        run docker push "$PUSH/$tag"
    done
fi

if [ -n "$SQSH" ]; then
    if [ "$DRY_RUN" = 0 ] && ! command -v enroot >/dev/null 2>&1; then
        echo "build.sh: error: enroot is not installed here: convert on a machine with enroot (see docs/CONTAINER.md)" >&2
        exit 2
    fi
    if [ "$DRY_RUN" = 0 ] && [ -e "$SQSH" ]; then
        echo "build.sh: error: $SQSH exists: remove it or pick another --sqsh file" >&2
        exit 2
    fi
    # enroot writes the squashfs itself; a temporary name keeps a half-written image from looking complete.
    run enroot import --output "$SQSH.tmp" "dockerd://${TAGS[1]}"
    run mv "$SQSH.tmp" "$SQSH"
fi
echo "built ${TAGS[*]}${SQSH:+ -> $SQSH}"

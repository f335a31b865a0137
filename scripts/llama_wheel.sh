#!/usr/bin/env sh
# Build llama-cpp-python once as a portable wheel and print the folder it is in.
#
# Why: pip builds llama-cpp-python from source with -march=native and caches that wheel
# keyed by version only. A wheel built on one CPU then crashes on another; on Sapphire
# Rapids the native build's AMX path segfaults inside llama_decode (ldtilecfg) with the
# bundled Q4_1 model. We build for a fixed instruction set instead (x86-64-v3: AVX2, FMA,
# F16C, as on any x86 server of the last decade; generic on other architectures) and key
# the folder by those flags, so a cached wheel is always the portable one.
#
# ggml also gets its own thread pool instead of OpenMP (GGML_OPENMP=OFF). torch brings its
# own libgomp into the same process, and libgomp stops spinning at its barriers once it
# manages more threads than there are CPUs: with torch's threads and ggml's both counted,
# each of ggml's hundreds of barriers per token went to sleep, and the server decoded at
# about 60 tokens/s where llama-cpp-python alone did 95 (2 cores).
#
# Usage: scripts/llama_wheel.sh PIP VERSION  (prints the wheel folder on stdout)
set -eu
PIP="$1"
VERSION="$2"
case "$(uname -m)" in
    x86_64|amd64)
        FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
        LEVEL="x86-64-v3" ;;
    *)
        FLAGS="-DGGML_NATIVE=OFF"
        LEVEL="$(uname -m)-generic" ;;
esac
FLAGS="$FLAGS -DGGML_OPENMP=OFF"
LEVEL="$LEVEL-threadpool"
DIR="${RODEOAI_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rodeoai/wheels}/llama-cpp-python-$VERSION-$LEVEL"
if ! ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $VERSION for $LEVEL (once; about 4 minutes on 2 cores)..." >&2
    mkdir -p "$DIR.tmp"
    CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 "$PIP" wheel --quiet --no-deps --no-cache-dir \
        --wheel-dir "$DIR.tmp" "llama-cpp-python==$VERSION" >&2
    rm -rf "$DIR"
    mv "$DIR.tmp" "$DIR"  # only a finished build is ever used
fi
echo "$DIR"

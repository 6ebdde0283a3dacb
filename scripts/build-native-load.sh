#!/usr/bin/env bash
# Builds the native load generator (benchmarks/native/load_generator.cc) into build/native/.
# It needs a C++17 compiler, pkg-config, gRPC C++ and protoc with gRPC's C++ plugin; where
# one is missing they are installed with apt-get when running as root (Debian/Ubuntu), and
# otherwise the script says what to install.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$here/build/native
packages="g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc"

have_toolchain() {
  command -v g++ >/dev/null && command -v protoc >/dev/null && command -v grpc_cpp_plugin >/dev/null &&
    command -v pkg-config >/dev/null && pkg-config --exists grpc++ protobuf
}

if ! have_toolchain; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "build-native-load: installing $packages with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages) >&2
  else
    echo "build-native-load: a C++ compiler, pkg-config, gRPC C++ and protoc with grpc_cpp_plugin are" \
         "needed (Debian/Ubuntu: sudo apt-get install $packages; macOS: brew install grpc pkg-config)." >&2
    exit 1
  fi
fi

rm -rf "$out/gen" && mkdir -p "$out/gen"
protoc -I"$here/protos" --cpp_out="$out/gen" --grpc_out="$out/gen" \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$here"/protos/faultprint/v1/*.proto
# shellcheck disable=SC2046  # pkg-config prints several flags on purpose
g++ -O2 -std=c++17 -Wall -Wextra -I"$out/gen" "$here/benchmarks/native/load_generator.cc" \
  "$out"/gen/faultprint/v1/*.cc -o "$out/load_generator.tmp" $(pkg-config --cflags --libs grpc++ protobuf)
mv "$out/load_generator.tmp" "$out/load_generator"
echo "build-native-load: built $out/load_generator" >&2

#!/usr/bin/env bash
# Gathers EdgeForge's non-torch dependencies from this machine's Debian packages into one prefix
# folder (headers, shared libraries, CMake package files, protoc), for a machine that has its own
# torch but no package registry. Usage: scripts/bundle-deps.sh PREFIX
#
# There: export LD_LIBRARY_PATH=PREFIX/lib:PREFIX/lib/x86_64-linux-gnu:PREFIX/lib/x86_64-linux-gnu/hdf5/serial:$LD_LIBRARY_PATH and configure with
#   cmake -S . -B build -G Ninja -DEDGEFORGE_DEPS_PREFIX=PREFIX -DEDGEFORGE_VENV=<its venv>
set -euo pipefail
prefix=${1:?usage: scripts/bundle-deps.sh PREFIX}
packages=(nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev catch2 libhdf5-dev libpng-dev
          libjpeg62-turbo-dev libprotobuf-dev protobuf-compiler libonnx-dev libonnxifi)
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || { echo "bundle-deps: package $p is not installed (run scripts/setup.sh first)" >&2; exit 1; }
done

rm -rf "$prefix.partial"
mkdir -p "$prefix.partial"/{include,lib,bin,share}
copy() {  # copy a file or symlink, keeping its path below /usr
  local src=$1 rel=${1#/usr/}
  mkdir -p "$prefix.partial/$(dirname "$rel")"
  cp -a "$src" "$prefix.partial/$rel"
}
for p in "${packages[@]}"; do
  while read -r f; do
    case "$f" in
      /usr/include/*|/usr/lib/$arch/*.so*|/usr/lib/*.so*|/usr/lib/*.a|/usr/lib/$arch/cmake/*|/usr/lib/cmake/*|/usr/share/cmake/*|/usr/lib/$arch/pkgconfig/*|/usr/share/pkgconfig/*|/usr/bin/protoc*|/usr/lib/$arch/hdf5/serial/*)
        case "$f" in *fortran*|*_cpp.so*|*hl_cpp*) continue ;; esac  # C API only
        case "$f" in *Catch2*.a|*onnxifi_loader.a) ;; *.a) continue ;; esac  # shared libraries, except what CMake files name
        [ -f "$f" ] || [ -L "$f" ] && copy "$f" ;;
    esac
  done < <(dpkg -L "$p")
done
# Runtime libraries the dev packages link against (libhdf5.so.103, libspdlog.so.1, ...), resolved
# from the symlinks above, plus what they need beyond glibc and the C++ runtime.
for so in $(find "$prefix.partial/lib" -name '*.so' -type l); do
  # follow the link chain (libx.so -> libx.so.N -> libx.so.N.M), copying every step
  link="/usr/${so#$prefix.partial/}"
  while [ -L "$link" ]; do
    next=$(readlink "$link"); case "$next" in /*) ;; *) next="$(dirname "$link")/$next" ;; esac
    copy "$next"; link=$next
  done
  real=$(readlink -f "/usr/${so#$prefix.partial/}")
  for dep in $(ldd "$real" 2>/dev/null | awk '/=> \//{print $3}'); do
    case "$(basename "$dep")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libstdc++.so*|libgcc_s.so*|ld-linux*) ;;
      *) if [ -e "$prefix.partial/lib/$arch/$(basename "$(readlink -f "$dep")")" ]; then
           ln -sf "$arch/$(basename "$(readlink -f "$dep")")" "$prefix.partial/lib/$(basename "$dep")"
         else cp -Ln "$dep" "$prefix.partial/lib/" 2>/dev/null || true; fi ;;
    esac
  done
done
# protoc's own libraries
for dep in $(ldd /usr/bin/protoc | awk '/=> \//{print $3}'); do
  case "$(basename "$dep")" in libc.so*|libm.so*|libstdc++.so*|libgcc_s.so*|ld-linux*) ;; *) cp -Ln "$dep" "$prefix.partial/lib/" 2>/dev/null || true ;; esac
done
rm -rf "$prefix" && mv "$prefix.partial" "$prefix"
echo "bundle-deps: wrote $prefix ($(du -sh "$prefix" | cut -f1))"

{
  "targets": [
    {
      "target_name": "native_vz",
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "sources": [],
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "src/linux/addon.cc",
            "src/posix/fd_util.cc",
            "src/posix/unix_socket.cc",
            "src/posix/copy_file.cc",
            "src/linux/frame_port.cc",
            "src/linux/process_guard.cc",
            "src/linux/packet_socket.cc"
          ],
          "ldflags": ["-pthread"],
          "cflags_cc": ["-pthread"],
          "conditions": [
            ["<!(node scripts/has-liburing.mjs)==1", {
              "defines": ["FLEET_HAVE_LIBURING"],
              "libraries": ["-l:liburing.a"]
            }]
          ]
        }],
        ["OS=='mac'", {
          "sources": [
            "src/darwin/addon.mm",
            "src/darwin/util.mm",
            "src/darwin/vm.mm",
            "src/darwin/install.mm",
            "src/darwin/vmnet.mm",
            "src/posix/fd_util.cc",
            "src/posix/unix_socket.cc",
            "src/posix/copy_file.cc",
            "src/darwin/frame_port_darwin.cc"
          ],
          "xcode_settings": {
            "CLANG_ENABLE_OBJC_ARC": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "13.0",
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "GCC_ENABLE_OBJC_EXCEPTIONS": "YES",
            "OTHER_CFLAGS": ["-Wall", "-Wno-unused-parameter"]
          },
          "link_settings": {
            "libraries": ["-framework Foundation", "-framework Virtualization", "-framework vmnet"]
          }
        }]
      ]
    }
  ]
}

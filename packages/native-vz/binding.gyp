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
            "src/linux/fd_util.cc",
            "src/linux/frame_port.cc"
          ]
        }],
        ["OS=='mac'", {
          "sources": []
        }]
      ]
    }
  ]
}

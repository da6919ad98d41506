{
  "targets": [
    {
      "target_name": "vmvault_native",
      "sources": ["seek.c", "lz4.c", "gcm.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-llz4"]
    }
  ]
}

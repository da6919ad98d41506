{
  "targets": [
    {
      "target_name": "vmvault_native",
      "sources": ["seek.c", "lz4.c", "gcm.c", "xxh64.c", "entropy.c", "copy.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-llz4", "-lm"]
    }
  ]
}

{
  "targets": [
    {
      "target_name": "vmvault_native",
      "sources": ["seek.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}

"""Using a trained run: decoding with a KV cache, sampling, the generate command, the HTTP server
(api, engine, queue) and the safetensors export. Everything here opens runs through
`bigmodel.restore`; nothing here is imported by training."""

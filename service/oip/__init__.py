"""The Open Inference Protocol (KServe v2), over HTTP and gRPC, beside our own API.

- `errors`: the protocol's error kinds (each transport maps them to its statuses);
- `tensors`: datatypes and bounded decoding of client tensors into numpy;
- `core`: the handlers (health, metadata, config, infer) over the registry and batchers;
- `rest`: the HTTP body codec (JSON tensors, binary tensor data extension);
- `grpc_server`: `inference.GRPCInferenceService` on grpc.aio (imported only with a gRPC port);
- `grpc_predict_v2.proto` (KServe's, Apache-2.0) and its committed stubs; `stubs` regenerates them.

The FastAPI routes are in service/http/routers/oip.py.
"""

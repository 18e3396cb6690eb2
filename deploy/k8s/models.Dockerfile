# syntax=docker/dockerfile:1
#
# The model repository as an image of its own, /models = models/ (manifests, ONNX files,
# config.pbtxt). Two consumers, one artefact:
#   - the Deployment's init container copies /models into the pod's emptyDir (base/deployment.yaml);
#   - KServe mounts it as a modelcar (storageUri: oci://...) for both InferenceServices.
# busybox, because both need `cp`/`sh` and nothing else.
#
#   docker build -f deploy/k8s/models.Dockerfile -t imagegen-models:0.1.0 .
FROM busybox:1.37.0
COPY --chown=root:root models/ /models/
USER 65534:65534

"""The data plane: the one transport-free request path (resolve, admit, submit, await, release,
count) under every entry point, and admission."""

"""imagegen: what neither side owns. `imagegen.contract` is what training and the service share
(torch-free); `imagegen.cli` is the `imagegen` command, which dispatches to either side."""

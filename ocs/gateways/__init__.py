"""External modules beside the node: the master database, the EM gateway and the BRM gateway."""

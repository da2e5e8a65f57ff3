"""Architecture search: the DARTS-space supernet and the DARTS, PC-DARTS and PARSEC strategies."""

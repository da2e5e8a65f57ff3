"""ENAS micro search (Pham et al., ICML 2018): one shared child network, an LSTM controller as its
sampler, REINFORCE on held-out accuracy.  ``shared.py`` the network, ``controller.py`` the sampler
and its update, ``recipe.py`` the recipe, ``runner.py`` the loop."""

"""The command-line tools as typed functions: ``tokencompose <command>`` builds each one's parser from its
signature and docstring (jsonargparse), so options are validated before any work starts.

Modules here import nothing heavy at the top: ``tokencompose <command> --help`` must not pay for torch.
"""

"""Print the Hydra overrides that pass proofsmith's judge settings to verl's Ray workers.

verl (0.9.1) builds the workers' runtime env from ``ray_kwargs.ray_init.runtime_env`` in its
config; this prints one ``++ray_kwargs.ray_init.runtime_env.env_vars.NAME='value'`` per judge
variable set in the environment (``proofsmith.train.adapters.JUDGE_ENV_VARS``), NUL-separated
for ``mapfile -d ''``. ``--json`` prints the runtime env itself.
"""

import json
import sys

from proofsmith.train.adapters import verl_ray_overrides, verl_runtime_env

if __name__ == "__main__":
    if "--json" in sys.argv[1:]:
        print(json.dumps(verl_runtime_env()))
    else:
        sys.stdout.write("".join(o + "\0" for o in verl_ray_overrides()))

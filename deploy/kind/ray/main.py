"""The workflow of the end-to-end suite's Ray image: one task on the Ray cluster KubeRay made
for the RayJob, its answer printed (the test reads it from the job's logs)."""

import socket

import ray


@ray.remote
def square(value: int) -> tuple[int, str]:
    return value * value, socket.gethostname()


def main() -> None:
    ray.init()  # the cluster of the RayJob (the job runs on its head)
    result, host = ray.get(square.remote(7))
    print(f"mlserve-workflow: square(7) = {result} on {host}", flush=True)


if __name__ == "__main__":
    main()

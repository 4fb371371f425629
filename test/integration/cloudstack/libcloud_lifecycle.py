"""A VM's and a volume's life through Apache Libcloud's CloudStack driver, as its users run it.

Reads the endpoint, keys and catalog names from the environment; prints one JSON object per step.
"""
import json
import os
from urllib.parse import urlparse

from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

endpoint = urlparse(os.environ["CLOUDSTACK_ENDPOINT"])
driver = get_driver(Provider.CLOUDSTACK)(
    key=os.environ["CLOUDSTACK_KEY"],
    secret=os.environ["CLOUDSTACK_SECRET"],
    host=endpoint.hostname,
    port=endpoint.port,
    path=endpoint.path,
    secure=False,
)


def step(name, **facts):
    print(json.dumps({"step": name, **facts}), flush=True)


location = next(l for l in driver.list_locations() if l.name == os.environ["ZONE"])
size = next(s for s in driver.list_sizes() if s.name == os.environ["OFFERING"])
image = next(i for i in driver.list_images(location=location) if i.name == os.environ["TEMPLATE"])
step("catalog", location=location.name, size=size.name, ram=size.ram, image=image.name)

node = driver.create_node(name="lc-1", size=size, image=image, location=location)
step("create_node", id=node.id, state=str(node.state))

driver.ex_start(node)
nodes = [n for n in driver.list_nodes() if n.id == node.id]
step("ex_start", state=str(nodes[0].state) if nodes else None, listed=len(nodes))

step("reboot_node", ok=driver.reboot_node(node))

driver.ex_stop(node)
volume = driver.create_volume(size=1, name="lc-data", location=location)
step("create_volume", id=volume.id, size=volume.size, state=volume.state)
step("attach_volume", ok=driver.attach_volume(node, volume))
attached = [v for v in driver.list_volumes(node=node) if v.id == volume.id]
step("list_volumes", attached=len(attached))
step("detach_volume", ok=driver.detach_volume(volume))
step("destroy_volume", ok=driver.destroy_volume(volume))
step("destroy_node", ok=driver.destroy_node(node))
step("after", nodes=len([n for n in driver.list_nodes() if n.id == node.id]))

provider "digitalocean" {
  # null falls back to the DIGITALOCEAN_TOKEN environment variable.
  token = var.do_token
}

locals {
  everywhere = ["0.0.0.0/0", "::/0"]
  # The orchestrator's default APP_PORT_RANGE: a preview's app port on the node that runs it.
  app_port_range = "8000-8999"

  # Each alert is created only when var.alert_email is set.
  alerts = var.alert_email == null ? {} : {
    cpu    = { type = "v1/insights/droplet/cpu", what = "CPU" }
    memory = { type = "v1/insights/droplet/memory_utilization_percent", what = "memory" }
    disk   = { type = "v1/insights/droplet/disk_utilization_percent", what = "disk" }
  }
}

resource "digitalocean_ssh_key" "deployer" {
  name       = "${var.name}-deployer"
  public_key = trimspace(var.ssh_public_key)
}

# The firewall finds the droplet through this tag, so a rebuilt droplet is covered at once.
resource "digitalocean_tag" "server" {
  name = var.name
}

# The workers' firewall finds them through this tag.
resource "digitalocean_tag" "worker" {
  name = "${var.name}-worker"
}

# Every droplet sits in one VPC: the Swarm's control and data traffic, the private registry and
# the previews' app ports are open on its private addresses only. Terraform creates the VPC
# unless vpc_uuid names an existing one. The workers join whatever VPC the server is in: a server
# created before this VPC existed stays where it is (moving a droplet replaces it).
resource "digitalocean_vpc" "previews" {
  count    = var.vpc_uuid == "" ? 1 : 0
  name     = "${var.name}-vpc"
  region   = var.region
  ip_range = var.vpc_ip_range
}

locals {
  vpc_id = var.vpc_uuid == "" ? digitalocean_vpc.previews[0].id : var.vpc_uuid
}

# The VPC the server is really in.
data "digitalocean_vpc" "server" {
  id = digitalocean_droplet.server.vpc_uuid
}

locals {
  # Its address range: the only source of the Swarm, registry and preview-port rules.
  vpc_ip_range = data.digitalocean_vpc.server.ip_range
}

resource "digitalocean_droplet" "server" {
  name       = var.name
  image      = "ubuntu-24-04-x64"
  region     = var.region
  size       = var.droplet_size
  vpc_uuid   = local.vpc_id
  monitoring = true
  ipv6       = true
  ssh_keys   = [digitalocean_ssh_key.deployer.fingerprint]
  tags       = concat([digitalocean_tag.server.id, "preview-deployer"], var.tags)

  lifecycle {
    # A new Ubuntu image or key, or a VPC it was not created in, must not silently replace a
    # server that holds live previews.
    ignore_changes = [image, ssh_keys, vpc_uuid]
  }
}

resource "digitalocean_firewall" "server" {
  name = "${var.name}-firewall"
  tags = [digitalocean_tag.server.id]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = var.admin_cidrs
  }

  inbound_rule {
    protocol         = "tcp"
    port_range       = "80"
    source_addresses = local.everywhere
  }

  inbound_rule {
    protocol         = "tcp"
    port_range       = "443"
    source_addresses = local.everywhere
  }

  # Swarm's cluster management (managers only listen on it), from the workers.
  inbound_rule {
    protocol         = "tcp"
    port_range       = "2377"
    source_addresses = [local.vpc_ip_range]
  }

  # Swarm's node gossip.
  inbound_rule {
    protocol         = "tcp"
    port_range       = "7946"
    source_addresses = [local.vpc_ip_range]
  }

  inbound_rule {
    protocol         = "udp"
    port_range       = "7946"
    source_addresses = [local.vpc_ip_range]
  }

  # Swarm's overlay networks (VXLAN): a preview's app and database may sit on two nodes.
  inbound_rule {
    protocol         = "udp"
    port_range       = "4789"
    source_addresses = [local.vpc_ip_range]
  }

  # The private image registry the workers pull preview images from (plain HTTP, see README).
  inbound_rule {
    protocol         = "tcp"
    port_range       = "5000"
    source_addresses = [local.vpc_ip_range]
  }

  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = local.everywhere
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "1-65535"
    destination_addresses = local.everywhere
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = local.everywhere
  }
}

# Swarm workers: previews spread over them when worker_count > 0 (ansible's swarm role joins them).
resource "digitalocean_droplet" "worker" {
  count      = var.worker_count
  name       = "${var.name}-worker-${count.index + 1}"
  image      = "ubuntu-24-04-x64"
  region     = var.region
  size       = var.worker_size == "" ? var.droplet_size : var.worker_size
  vpc_uuid   = digitalocean_droplet.server.vpc_uuid
  monitoring = true
  ipv6       = true
  ssh_keys   = [digitalocean_ssh_key.deployer.fingerprint]
  tags       = concat([digitalocean_tag.worker.id, "preview-deployer"], var.tags)

  lifecycle {
    # As for the server: a worker runs live previews.
    ignore_changes = [image, ssh_keys]
  }
}

# Workers serve nothing to the public: nginx on the server reaches each preview's app port over
# the VPC, and only SSH (Ansible from admin_cidrs, the orchestrator's clean-up from the server)
# comes in from outside the Swarm.
resource "digitalocean_firewall" "worker" {
  name = "${var.name}-worker-firewall"
  tags = [digitalocean_tag.worker.id]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = var.admin_cidrs
  }

  # The orchestrator cleans up on each worker through `docker -H ssh://root@<VPC address>`.
  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["${digitalocean_droplet.server.ipv4_address_private}/32"]
  }

  # Swarm's node gossip.
  inbound_rule {
    protocol         = "tcp"
    port_range       = "7946"
    source_addresses = [local.vpc_ip_range]
  }

  inbound_rule {
    protocol         = "udp"
    port_range       = "7946"
    source_addresses = [local.vpc_ip_range]
  }

  # Swarm's overlay networks (VXLAN).
  inbound_rule {
    protocol         = "udp"
    port_range       = "4789"
    source_addresses = [local.vpc_ip_range]
  }

  # Previews publish their app port in host mode on the node that runs them (the orchestrator's
  # APP_PORT_RANGE); nginx on the server proxies to it.
  inbound_rule {
    protocol         = "tcp"
    port_range       = local.app_port_range
    source_addresses = [local.vpc_ip_range]
  }

  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = local.everywhere
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "1-65535"
    destination_addresses = local.everywhere
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = local.everywhere
  }
}

# A reserved IP survives a rebuilt droplet, so DNS records and GitHub webhooks keep working.
resource "digitalocean_reserved_ip" "server" {
  region = var.region
}

resource "digitalocean_reserved_ip_assignment" "server" {
  ip_address = digitalocean_reserved_ip.server.ip_address
  droplet_id = digitalocean_droplet.server.id
}

# Hostname routing: {preview_domain} (the webhook) and *.{preview_domain} (one name per preview)
# point at the reserved IP, when DigitalOcean hosts the DNS zone that holds them.
locals {
  manage_dns = var.dns_zone != "" && var.preview_domain != ""
  # The records' names relative to the zone: "" when preview_domain is the zone itself.
  dns_name = local.manage_dns ? trimsuffix(trimsuffix(var.preview_domain, var.dns_zone), ".") : ""
}

resource "terraform_data" "dns_zone_holds_preview_domain" {
  count = local.manage_dns ? 1 : 0
  lifecycle {
    precondition {
      condition     = var.preview_domain == var.dns_zone || endswith(var.preview_domain, ".${var.dns_zone}")
      error_message = "preview_domain must be dns_zone itself or a name under it."
    }
  }
}

resource "digitalocean_record" "preview_domain" {
  count  = local.manage_dns ? 1 : 0
  domain = var.dns_zone
  type   = "A"
  name   = local.dns_name == "" ? "@" : local.dns_name
  value  = digitalocean_reserved_ip.server.ip_address
  ttl    = 300
}

resource "digitalocean_record" "previews_wildcard" {
  count  = local.manage_dns ? 1 : 0
  domain = var.dns_zone
  type   = "A"
  name   = local.dns_name == "" ? "*" : "*.${local.dns_name}"
  value  = digitalocean_reserved_ip.server.ip_address
  ttl    = 300
}

resource "digitalocean_monitor_alert" "usage" {
  for_each = local.alerts

  description = "${var.name}: ${each.value.what} above ${var.alert_threshold_percent}% for 5 minutes"
  type        = each.value.type
  compare     = "GreaterThan"
  value       = var.alert_threshold_percent
  window      = "5m"
  enabled     = true
  entities    = concat([digitalocean_droplet.server.id], digitalocean_droplet.worker[*].id)

  alerts {
    email = [var.alert_email]
  }
}

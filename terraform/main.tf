provider "digitalocean" {
  # null falls back to the DIGITALOCEAN_TOKEN environment variable.
  token = var.do_token
}

locals {
  everywhere = ["0.0.0.0/0", "::/0"]

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

resource "digitalocean_droplet" "server" {
  name       = var.name
  image      = "ubuntu-24-04-x64"
  region     = var.region
  size       = var.droplet_size
  monitoring = true
  ipv6       = true
  ssh_keys   = [digitalocean_ssh_key.deployer.fingerprint]
  tags       = concat([digitalocean_tag.server.id, "preview-deployer"], var.tags)

  lifecycle {
    # A new Ubuntu image or key must not silently replace a server that holds live previews.
    ignore_changes = [image, ssh_keys]
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
  entities    = [digitalocean_droplet.server.id]

  alerts {
    email = [var.alert_email]
  }
}

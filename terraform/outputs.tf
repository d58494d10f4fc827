output "server_ip" {
  description = "Address to use for SSH, DNS and webhooks: the reserved IP, which stays when the droplet is rebuilt."
  value       = digitalocean_reserved_ip_assignment.server.ip_address
}

output "reserved_ip" {
  description = "The reserved IP assigned to the droplet."
  value       = digitalocean_reserved_ip.server.ip_address
}

output "droplet_ipv4" {
  description = "The droplet's own public IPv4 address (changes when the droplet is rebuilt)."
  value       = digitalocean_droplet.server.ipv4_address
}

output "droplet_id" {
  description = "ID of the droplet."
  value       = digitalocean_droplet.server.id
}

output "ssh_user" {
  description = "User that Ansible and the CLI log in as. Ubuntu droplets allow only root at first."
  value       = "root"
}

output "dns_records" {
  description = "The A records Terraform manages for hostname routing (empty without dns_zone and preview_domain)."
  value       = [for r in concat(digitalocean_record.preview_domain, digitalocean_record.previews_wildcard) : "${r.fqdn} A ${r.value}"]
}

output "server_private_ipv4" {
  description = "The server's address in the VPC: the Swarm manager's advertise address and the private registry's (port 5000)."
  value       = digitalocean_droplet.server.ipv4_address_private
}

output "worker_ipv4" {
  description = "The Swarm workers' public IPv4 addresses (for Ansible over SSH), in worker order; empty without workers."
  value       = digitalocean_droplet.worker[*].ipv4_address
}

output "worker_private_ipv4" {
  description = "The Swarm workers' VPC addresses (where nginx reaches their previews), in the order of worker_ipv4."
  value       = digitalocean_droplet.worker[*].ipv4_address_private
}

output "vpc_ip_range" {
  description = "The VPC's address range; the Swarm, registry and preview-port firewall rules admit only it."
  value       = local.vpc_ip_range
}

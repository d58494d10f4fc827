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
